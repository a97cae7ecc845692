"""FaPN's building blocks: the Feature Selection and Feature Alignment modules."""

from fapn.layers.conv_norm import Conv2dNorm, Norm, make_norm
from fapn.layers.deform_conv import ModulatedDeformConv2d
from fapn.layers.fam import FeatureAlignModule, Fusion, UpsampleMode
from fapn.layers.fpn_merge import FPNMerge
from fapn.layers.fsm import FeatureSelectionModule
from fapn.layers.init import c2_xavier_fill
from fapn.layers.padding import ceil_div, pad_to_multiple

__all__ = [
    "FeatureSelectionModule",
    "FeatureAlignModule",
    "ModulatedDeformConv2d",
    "FPNMerge",
    "Conv2dNorm",
    "Norm",
    "make_norm",
    "Fusion",
    "UpsampleMode",
    "c2_xavier_fill",
    "pad_to_multiple",
    "ceil_div",
]
