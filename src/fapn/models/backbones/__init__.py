"""Backbone bodies returning an ``OrderedDict`` of feature maps: torchvision ResNets and any timm encoder.

:func:`build_backbone` is the one entry point the models call: ``"resnet18"`` .. ``"resnet101"`` (torchvision,
ImageNet weights from torchvision or a local file) or ``"timm:<name>"`` (any pyramid encoder of timm through its
``features_only`` interface; timm is an optional extra, ``pip install 'fapn[timm]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from fapn.models.backbones.resnet import (
    RESNETS,
    BackboneWeights,
    ResNetBody,
    load_resnet_weights,
    resnet_backbone,
    resnet_body,
)
from fapn.models.backbones.timm import TIMM_PREFIX, TimmBackbone, timm_backbone

__all__ = [
    "RESNETS",
    "resnet_body",
    "load_resnet_weights",
    "BackboneWeights",
    "TIMM_PREFIX",
    "TimmBackbone",
    "timm_backbone",
    "build_backbone",
    "ResNetBody",
    "resnet_backbone",
]


def build_backbone(
    name: str,
    weights: BackboneWeights = None,
    strides: Sequence[int] = (8, 16, 32),
    names: Sequence[str] | None = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
    **timm_kwargs: Any,
) -> ResNetBody | TimmBackbone:
    """The backbone body of every model here: a torchvision ResNet or ``timm:<name>``.

    The body maps ``[N, 3, H, W]`` images to an ``OrderedDict`` of maps at ``strides`` (keys ``names``,
    ``c2..c5`` by default) and has the attributes ``channels`` and ``strides``.

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"timm:<timm name>"``.
        weights: ImageNet weights, see :data:`BackboneWeights` (ResNet) and :func:`timm_backbone` (timm).
        strides: strides of the returned maps, from 4, 8, 16, 32 (ResNet) or any the timm encoder has.
        names: output keys.
        norm_layer: ResNet only: normalisation layer (e.g. ``FrozenBatchNorm2d``).
        **timm_kwargs: timm only: passed to ``timm.create_model``.

    Example:
        >>> import torch
        >>> body = build_backbone("resnet18", strides=(8, 16, 32))
        >>> body.channels, list(body(torch.randn(1, 3, 64, 64)))
        ([128, 256, 512], ['c3', 'c4', 'c5'])
    """
    if name.startswith(TIMM_PREFIX):
        if norm_layer is not None:
            raise ValueError("norm_layer applies to torchvision ResNets only, not to timm encoders")
        return timm_backbone(name[len(TIMM_PREFIX) :], weights, strides, names, **timm_kwargs)
    if timm_kwargs:
        raise ValueError(f"timm options {sorted(timm_kwargs)} given for the torchvision backbone {name!r}")
    return resnet_backbone(name, weights, strides, names, norm_layer)
