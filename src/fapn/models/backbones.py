"""ResNet bodies returning C3-C5 (or any stages), with ImageNet weights from torchvision or a local file."""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models._utils import IntermediateLayerGetter

__all__ = ["RESNETS", "resnet_body", "load_resnet_weights", "BackboneWeights"]

RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}
_WEIGHT_ENUMS: dict[str, type[WeightsEnum]] = {
    "resnet18": torchvision.models.ResNet18_Weights,
    "resnet34": torchvision.models.ResNet34_Weights,
    "resnet50": torchvision.models.ResNet50_Weights,
    "resnet101": torchvision.models.ResNet101_Weights,
}

BackboneWeights = WeightsEnum | str | os.PathLike[str] | None
"""``None`` (random), a torchvision weight enum, its name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or a local file."""


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a ResNet state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_resnet_weights(model: torchvision.models.ResNet, name: str, weights: BackboneWeights) -> None:
    """Load ImageNet weights into ``model`` (a torchvision ResNet ``name``) in place.

    Args:
        model: the ResNet to fill.
        name: its architecture name, a key of :data:`RESNETS`.
        weights: see :data:`BackboneWeights`. A path is read locally; an enum is downloaded by torchvision (or
            read from its cache under ``$TORCH_HOME``).

    Raises:
        FileNotFoundError: a path that does not exist.
        RuntimeError: torchvision weights that cannot be downloaded (offline), with what to do instead.
    """
    if weights is None:
        return
    if isinstance(weights, (str, os.PathLike)) and (
        Path(weights).suffix in (".pth", ".pt", ".bin") or Path(weights).exists() or os.sep in str(weights)
    ):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        state_dict = _state_dict_from_file(path)
        source = str(path)
    else:
        enum_type = _WEIGHT_ENUMS[name]
        if isinstance(weights, str):
            try:
                weights = enum_type[weights] if weights != "DEFAULT" else enum_type.DEFAULT
            except KeyError:
                valid = ["DEFAULT", *enum_type.__members__]
                raise ValueError(
                    f"unknown weights {weights!r} for {name}; valid names: {valid}, or a path to a .pth file"
                ) from None
        try:
            state_dict = weights.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise RuntimeError(
                f"could not download {name} weights {weights} from {weights.url} ({err}). "
                "Without internet access, download that file on another machine and pass its path as "
                "weights_backbone, or copy it into torch's cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints'})."
            ) from err
        source = str(weights)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise RuntimeError(
            f"weights from {source} do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def resnet_body(
    name: str,
    return_layers: dict[str, str],
    weights: BackboneWeights = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
) -> IntermediateLayerGetter:
    """A torchvision ResNet cut after its last requested stage, returning an ``OrderedDict`` of stages.

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
        return_layers: torchvision stage name -> output name, e.g. ``{"layer2": "c3", "layer3": "c4"}``.
        weights: ImageNet weights, see :data:`BackboneWeights`.
        norm_layer: normalisation layer (e.g. ``torchvision.ops.FrozenBatchNorm2d``); BatchNorm2d if ``None``.

    Example:
        >>> body = resnet_body("resnet18", {"layer2": "c3", "layer4": "c5"})
        >>> [tuple(v.shape) for v in body(torch.randn(1, 3, 64, 64)).values()]
        [(1, 128, 8, 8), (1, 512, 2, 2)]
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {sorted(RESNETS)}")
    kwargs: dict[str, Any] = {"weights": None}
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    model = RESNETS[name](**kwargs)
    load_resnet_weights(model, name, weights)
    return IntermediateLayerGetter(model, return_layers=return_layers)
