"""The semantic FPN head (Kirillov et al., Panoptic FPN) and a stand-alone semantic FPN on FaPN (or FPN)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fapn.models.backbones import RESNETS, TIMM_PREFIX, BackboneWeights
from fapn.models.inputs import padded_images
from fapn.models.pyramid import Neck, resnet_pyramid
from fapn.models.registry import register_model

__all__ = [
    "SemanticFPNHead",
    "SemanticFPN",
    "semantic_fpn",
    "semantic_fpn_resnet50_fapn",
    "semantic_fpn_resnet101_fapn",
]


def _conv_gn_relu(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # detectron2's c2_msra_fill
    return nn.Sequential(conv, nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """detectron2's ``SemSegFPNHead``: every pyramid level brought to ``common_stride`` and summed.

    For a level of stride ``s``, ``max(1, log2(s / common_stride))`` times conv3x3 + GroupNorm(32) + ReLU,
    each followed by a 2x bilinear upsampling while the level is coarser than ``common_stride``. The sum goes
    through a 1x1 conv to the classes, and the logits are upsampled by ``common_stride`` to the input size.

    Args:
        in_channels: pyramid width (256).
        num_classes: semantic classes (Panoptic FPN: stuff classes + 1 for "thing", at index 0).
        strides: stride of each input level, highest resolution first (``(4, 8, 16, 32)`` for P2-P5).
        conv_dims: head width (128).
        common_stride: stride at which levels are summed (4).
        norm_groups: GroupNorm groups (32).

    Example:
        >>> import torch
        >>> head = SemanticFPNHead(32, 5, conv_dims=16, norm_groups=4)
        >>> feats = [torch.randn(1, 32, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
        >>> head(feats).shape
        torch.Size([1, 5, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int] = (4, 8, 16, 32),
        conv_dims: int = 128,
        common_stride: int = 4,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.strides = list(strides)
        self.common_stride = common_stride
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            ops: list[nn.Module] = []
            length = max(1, int(math.log2(stride) - math.log2(common_stride)))
            for k in range(length):
                ops.append(_conv_gn_relu(in_channels if k == 0 else conv_dims, conv_dims, norm_groups))
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))
        self.predictor = nn.Conv2d(conv_dims, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        assert self.predictor.bias is not None  # built with bias=True
        nn.init.zeros_(self.predictor.bias)

    def layers(self, features: Sequence[Tensor]) -> Tensor:
        """Logits at ``common_stride``."""
        if len(features) != len(self.scale_heads):
            raise ValueError(f"expected {len(self.scale_heads)} feature maps, got {len(features)}")
        x = self.scale_heads[0](features[0])
        for head, feature in zip(self.scale_heads[1:], features[1:]):
            x = x + head(feature)
        return self.predictor(x)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Args:
            features: one map per stride in ``strides``, each exactly ``2x`` the next.

        Returns:
            logits at ``common_stride`` times the first map's size.
        """
        return F.interpolate(
            self.layers(features), scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )

    @staticmethod
    def loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
        """Mean cross-entropy over non-ignored pixels (detectron2's loss before its weight)."""
        return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="mean")


class SemanticFPN(nn.Module):
    """A pyramid backbone (e.g. :class:`~fapn.models.pyramid.BackboneWithFaPN`) + :class:`SemanticFPNHead`.

    Takes normalised images ``[N, 3, H, W]`` of any size (padded inside to a multiple of 32) and returns
    logits ``[N, num_classes, H, W]``, as the segmentation models of this package do.

    Args:
        backbone: returns an ordered dict whose first four maps have strides 4, 8, 16, 32; ``out_channels``.
        num_classes: semantic classes.
        conv_dims: head width.

    Example:
        >>> import torch
        >>> model = semantic_fpn("resnet18", num_classes=19).eval()
        >>> model(torch.randn(1, 3, 64, 96)).shape
        torch.Size([1, 19, 64, 96])
    """

    size_divisibility = 32

    def __init__(self, backbone: nn.Module, num_classes: int, conv_dims: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = SemanticFPNHead(int(backbone.out_channels), num_classes, conv_dims=conv_dims)  # type: ignore[arg-type]  # set by the pyramid builders

    def forward(self, images: Tensor) -> Tensor:
        """Args:
            images: normalised float images ``[N, 3, H, W]``, any size.

        Returns:
            logits ``[N, num_classes, H, W]``.
        """
        height, width = images.shape[-2:]
        x = padded_images(images, self, self.size_divisibility)
        features = list(self.backbone(x).values())[: len(self.head.strides)]
        return self.head(features)[..., :height, :width]


@register_model()
def semantic_fpn(
    backbone: str = "resnet50",
    num_classes: int = 19,
    weights_backbone: BackboneWeights = None,
    *,
    neck: Neck = "fapn",
    trainable_backbone_layers: int | None = None,
    frozen_batch_norm: bool | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    conv_dims: int = 128,
) -> SemanticFPN:
    """Semantic FPN (detectron2's ``SemSegFPNHead`` on P2-P5) on a ResNet + FaPN, or + FPN for the baseline.

    Frozen batch norm and stem + res2 frozen when ImageNet weights are given, as the authors (detectron2's
    ``FREEZE_AT: 2``); everything trainable from scratch.

    Args:
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"timm:<name>"`` (any timm
            encoder with maps at strides 4-32, see :func:`fapn.models.pyramid.timm_pyramid`).
        num_classes: semantic classes (19 for Cityscapes).
        weights_backbone: ImageNet weights (enum, name or ``.pth`` path), or ``None``.
        neck: ``"fapn"`` or ``"fpn"`` (torchvision's, the baseline).
        trainable_backbone_layers: 0 to 5, ``None`` for torchvision's default.
        frozen_batch_norm: ``None``: frozen exactly when ``weights_backbone`` is given.
        fapn_kwargs: extra arguments of :class:`fapn.FaPN` (ablations, ``norm``).
        conv_dims: width of the head.

    Example:
        >>> import torch
        >>> model = semantic_fpn("resnet18", num_classes=5, neck="fpn").eval()
        >>> model(torch.randn(1, 3, 45, 70)).shape
        torch.Size([1, 5, 45, 70])
    """
    if backbone not in RESNETS and not backbone.startswith(TIMM_PREFIX):
        raise ValueError(
            f"unknown backbone {backbone!r} for semantic_fpn; valid backbones: {sorted(RESNETS)} or 'timm:<name>'"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    pyramid = resnet_pyramid(
        backbone,
        neck=neck,
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        frozen_batch_norm=frozen_batch_norm,
        fapn_kwargs=fapn_kwargs,
    )
    return SemanticFPN(pyramid, num_classes, conv_dims=conv_dims)


@register_model()
def semantic_fpn_resnet50_fapn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
) -> SemanticFPN:
    """Semantic FPN on ResNet-50 + FaPN (the authors' semantic setting); see :func:`semantic_fpn`.

    Args:
        num_classes: semantic classes (19 for Cityscapes).
        weights_backbone: ImageNet weights (enum, name or ``.pth`` path), or ``None``.
        trainable_backbone_layers: 0 to 5.
    """
    return semantic_fpn("resnet50", num_classes, weights_backbone, trainable_backbone_layers=trainable_backbone_layers)


@register_model()
def semantic_fpn_resnet101_fapn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
) -> SemanticFPN:
    """Semantic FPN on ResNet-101 + FaPN; arguments as :func:`semantic_fpn_resnet50_fapn`."""
    return semantic_fpn("resnet101", num_classes, weights_backbone, trainable_backbone_layers=trainable_backbone_layers)
