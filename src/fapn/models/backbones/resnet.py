"""torchvision ResNets as backbone bodies, with ImageNet weights from torchvision or a local file."""

from __future__ import annotations

import math
import os
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models._utils import IntermediateLayerGetter

from fapn.state_dict import model_state_from, read_torch_file

__all__ = [
    "RESNETS",
    "BackboneWeights",
    "load_resnet_weights",
    "resnet_body",
    "ResNetBody",
    "resnet_backbone",
    "default_names",
]


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


BackboneWeights: TypeAlias = WeightsEnum | str | os.PathLike[str] | None
"""``None`` (random), a torchvision weight enum, its name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or a local file."""


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    state = model_state_from(read_torch_file(path, map_location="cpu"), path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_resnet_weights(model: torchvision.models.ResNet, name: str, weights: BackboneWeights) -> None:
    """Load ImageNet weights into ``model`` (a torchvision ResNet ``name``) in place.

    Args:
        model: the ResNet to fill.
        name: its architecture name, a key of :data:`RESNETS`.
        weights: see :data:`BackboneWeights`. A path is read locally; an enum is downloaded by torchvision (or
            read from its cache under ``$TORCH_HOME``).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: weights that do not fit ``name`` (another network's), naming the keys or shapes.
        FileNotFoundError: torchvision weights neither in torch's cache nor downloadable (offline), with what to
            do instead.
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
        enum_weights: Any = weights  # a torchvision WeightsEnum member from here on
        if isinstance(weights, str):
            try:
                enum_weights = enum_type[weights] if weights != "DEFAULT" else enum_type.DEFAULT
            except KeyError:
                valid = ["DEFAULT", *enum_type.__members__]
                raise ValueError(
                    f"unknown weights {weights!r} for {name}; valid names: {valid}, or a path to a .pth file"
                ) from None
        try:
            state_dict = enum_weights.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise FileNotFoundError(
                f"could not download {name} weights {enum_weights} from {enum_weights.url} ({err}). "
                "Without internet access, download that file on another machine and pass its path as "
                "weights_backbone, or copy it into torch's cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints'})."
            ) from err
        source = str(enum_weights)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # tensors of another shape: another network's weights
        detail = " ".join(str(err).split("\n", 1)[-1].split())
        raise ValueError(f"weights from {source} do not fit {name}: {detail[:300]}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"weights from {source} do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")


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
    return IntermediateLayerGetter(_resnet(name, weights, norm_layer), return_layers=return_layers)


class ResNetBody(IntermediateLayerGetter):
    """A torchvision ResNet cut after its last requested stage (``IntermediateLayerGetter``, same state dict), with
    the ``channels`` and ``strides`` of the maps it returns, as :class:`TimmBackbone` has them.

    Args:
        model: the ResNet.
        return_layers: stage name -> output name.
        channels, strides: of each returned map.
    """

    def __init__(
        self, model: nn.Module, return_layers: dict[str, str], channels: list[int], strides: list[int]
    ) -> None:
        super().__init__(model, return_layers=return_layers)
        self.channels = list(channels)
        self.strides = list(strides)


_RESNET_STAGES = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}


_RESNET_CHANNELS = {
    "resnet18": {4: 64, 8: 128, 16: 256, 32: 512},
    "resnet34": {4: 64, 8: 128, 16: 256, 32: 512},
    "resnet50": {4: 256, 8: 512, 16: 1024, 32: 2048},
    "resnet101": {4: 256, 8: 512, 16: 1024, 32: 2048},
}


def default_names(strides: Sequence[int]) -> list[str]:
    """``c2`` .. ``c5`` for strides 4 .. 32: the output names the models of this package use."""
    return [f"c{int(math.log2(s))}" for s in strides]


def _resnet(
    name: str, weights: BackboneWeights, norm_layer: Callable[[int], nn.Module] | None
) -> torchvision.models.ResNet:
    kwargs: dict[str, Any] = {"weights": None}
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    model = RESNETS[name](**kwargs)
    load_resnet_weights(model, name, weights)
    return model


def resnet_backbone(
    name: str,
    weights: BackboneWeights = None,
    strides: Sequence[int] = (8, 16, 32),
    names: Sequence[str] | None = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
) -> ResNetBody:
    """The ResNet half of :func:`fapn.models.backbones.build_backbone`: maps at ``strides`` with ``channels``.

    Example:
        >>> resnet_backbone("resnet18", strides=(16, 32)).channels
        [256, 512]
    """
    if name not in RESNETS:
        raise ValueError(
            f"unknown backbone {name!r}; valid backbones: {sorted(RESNETS)} or 'timm:<name>' (any timm encoder)"
        )
    strides = list(strides)
    bad = [s for s in strides if s not in _RESNET_STAGES]
    if bad:
        raise ValueError(f"{name} has stages at strides {sorted(_RESNET_STAGES)}, not {bad}")
    names = list(names) if names is not None else default_names(strides)
    model = _resnet(name, weights, norm_layer)
    return_layers = {_RESNET_STAGES[s]: n for s, n in zip(strides, names)}
    return ResNetBody(model, return_layers, [_RESNET_CHANNELS[name][s] for s in strides], strides)
