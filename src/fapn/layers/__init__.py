"""FaPN's building blocks: the Feature Selection and Feature Alignment modules."""

from fapn.layers.deform_conv import ModulatedDeformConv2d
from fapn.layers.fam import FeatureAlignModule, Fusion, UpsampleMode
from fapn.layers.fpn_merge import FPNMerge
from fapn.layers.fsm import FeatureSelectionModule
from fapn.layers.init import c2_xavier_fill

__all__ = [
    "FeatureSelectionModule",
    "FeatureAlignModule",
    "ModulatedDeformConv2d",
    "FPNMerge",
    "Fusion",
    "UpsampleMode",
    "c2_xavier_fill",
]
