"""The semantic FPN head (Kirillov et al., Panoptic FPN) and a stand-alone semantic FPN on FaPN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import WeightsEnum

__all__ = ["SemanticFPNHead", "SemanticFPN", "semantic_fpn_resnet50_fapn", "semantic_fpn_resnet101_fapn"]


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
    """A pyramid backbone (e.g. :class:`~fapn.models.detection.BackboneWithFaPN`) + :class:`SemanticFPNHead`.

    Takes normalised images ``[N, 3, H, W]`` of any size (padded inside to a multiple of 32) and returns
    logits ``[N, num_classes, H, W]``, as the segmentation models of this package do.

    Args:
        backbone: returns an ordered dict whose first four maps have strides 4, 8, 16, 32; ``out_channels``.
        num_classes: semantic classes.
        conv_dims: head width.

    Example:
        >>> model = semantic_fpn_resnet50_fapn(num_classes=19).eval()  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 64, 96)).shape  # doctest: +SKIP
        torch.Size([1, 19, 64, 96])
    """

    size_divisibility = 32

    def __init__(self, backbone: nn.Module, num_classes: int, conv_dims: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = SemanticFPNHead(backbone.out_channels, num_classes, conv_dims=conv_dims)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_h = (-height) % self.size_divisibility
        pad_w = (-width) % self.size_divisibility
        x = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        features = list(self.backbone(x).values())[: len(self.head.strides)]
        return self.head(features)[..., :height, :width]


def _semantic_fpn(
    depth: int, num_classes: int, weights_backbone: WeightsEnum | str | None, trainable_backbone_layers: int | None
) -> SemanticFPN:
    from fapn.models.detection.builders import fapn_backbone

    backbone = fapn_backbone(depth, weights_backbone, trainable_backbone_layers, weights_backbone is not None)
    return SemanticFPN(backbone, num_classes)


def semantic_fpn_resnet50_fapn(
    *,
    num_classes: int,
    weights_backbone: WeightsEnum | str | None = None,
    trainable_backbone_layers: int | None = None,
) -> SemanticFPN:
    """Semantic FPN on ResNet-50 + FaPN (frozen BN when ImageNet weights are given, as the authors).

    Args:
        num_classes: semantic classes (19 for Cityscapes).
        weights_backbone: ImageNet weights (enum, name or ``.pth`` path), or ``None``.
        trainable_backbone_layers: 0 to 5.
    """
    return _semantic_fpn(50, num_classes, weights_backbone, trainable_backbone_layers)


def semantic_fpn_resnet101_fapn(
    *,
    num_classes: int,
    weights_backbone: WeightsEnum | str | None = None,
    trainable_backbone_layers: int | None = None,
) -> SemanticFPN:
    """Semantic FPN on ResNet-101 + FaPN; arguments as :func:`semantic_fpn_resnet50_fapn`."""
    return _semantic_fpn(101, num_classes, weights_backbone, trainable_backbone_layers)


