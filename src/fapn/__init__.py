"""fapn: Feature-aligned Pyramid Networks (Huang et al., ICCV 2021) in PyTorch.

Example:
    >>> import torch, fapn
    >>> model = fapn.models.realtime_fapn(backbone="resnet18", num_classes=19, variant="fapn").eval()
    >>> model(torch.randn(1, 3, 64, 96)).shape
    torch.Size([1, 19, 64, 96])
"""

from fapn import layers, models, necks, ops
from fapn.layers import FeatureAlignModule, FeatureSelectionModule, ModulatedDeformConv2d
from fapn.necks import FaPN

__version__ = "0.1.0"

__all__ = [
    "FaPN",
    "FeatureAlignModule",
    "FeatureSelectionModule",
    "ModulatedDeformConv2d",
    "layers",
    "models",
    "necks",
    "ops",
    "__version__",
]
