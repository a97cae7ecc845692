"""fapn: Feature-aligned Pyramid Networks (Huang et al., ICCV 2021) in PyTorch.

The sub-packages and the names below are imported on first use (PEP 562), so that ``import fapn`` -- and with it
``fapn --help`` -- does not import torch [ours].

Example:
    >>> import torch, fapn
    >>> model = fapn.models.realtime_fapn(backbone="resnet18", num_classes=19, neck="fapn").eval()
    >>> model(torch.randn(1, 3, 64, 96)).shape
    torch.Size([1, 19, 64, 96])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "__version__",
]

_SUBMODULES = ("layers", "models", "necks", "ops")
_NAMES = {
    "FaPN": "fapn.necks",
    "FeatureAlignModule": "fapn.layers",
    "FeatureSelectionModule": "fapn.layers",
    "ModulatedDeformConv2d": "fapn.layers",
    "save_pretrained": "fapn.hub",
    "from_pretrained": "fapn.hub",
    "push_to_hub": "fapn.hub",
}

if TYPE_CHECKING:
    from fapn import layers, models, necks, ops
    from fapn.hub import from_pretrained, push_to_hub, save_pretrained
    from fapn.layers import FeatureAlignModule, FeatureSelectionModule, ModulatedDeformConv2d
    from fapn.necks import FaPN


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"fapn.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fapn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
