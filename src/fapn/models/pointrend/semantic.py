"""PointRend for semantic segmentation: the semantic FPN head as the coarse head, a point head on P2.

The paper's Cityscapes model (80.0 mIoU with ResNet-50, 80.1 with ResNet-101) is this model on the FaPN neck,
run by the authors through detectron2's PointRend project (``pointrend_semantic_R_{50,101}_FAN_1x_cityscapes``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.models.inputs import padded_images, padded_targets
from fapn.models.pointrend.point_features import (
    point_sample,
    semantic_uncertainty,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from fapn.models.pointrend.point_head import StandardPointHead
from fapn.models.semantic_fpn import SemanticFPNHead

__all__ = ["PointRendSemanticFPN", "masked_cross_entropy"]


def masked_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over the non-ignored targets; 0 (with a graph) when every target is ignored, where
    ``F.cross_entropy(reduction="mean")`` would return NaN [ours]."""
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="mean")


class PointRendSemanticFPN(nn.Module):
    """detectron2's ``SemanticSegmentor`` + ``PointRendSemSegHead`` [pointrend] on a pyramid backbone.

    Training, per image: the coarse head's logits (stride 4) get the usual cross-entropy after a 4x bilinear
    upsampling (``loss_sem_seg``); ``train_num_points`` points are chosen by uncertainty (the gap between the two
    best logits) with oversampling and random points, and the point head's logits there get a cross-entropy
    against the nearest label (``loss_sem_seg_point``). Inference: ``subdivision_steps`` times, upsample the
    logits 2x and recompute the ``subdivision_num_points`` most uncertain ones with the point head.

    The point head sees P2 and the *coarse* logits at each point (not the refined ones), as in detectron2.
    Images of any size are padded to a multiple of 32 inside (targets with ``ignore_index``), and the output is
    cropped back: ``[N, num_classes, H, W]`` logits at the input size.

    Args:
        backbone: returns an ordered dict whose first four maps are P2-P5 (strides 4-32); has ``out_channels``.
        num_classes: classes.
        conv_dims: semantic FPN head width (128).
        point_fc_dim, point_num_fc: point head MLP (256, 3).
        coarse_pred_each_layer: concatenate the coarse logits to every point head layer (``False`` for semantic
            segmentation in the authors' config).
        train_num_points: points per image in training (2048 for Cityscapes; detectron2's base config 1024).
        oversample_ratio, importance_sample_ratio: training point selection (3, 0.75).
        subdivision_steps, subdivision_num_points: inference refinement (2 steps of 8192 points).
        ignore_index: label ignored by both losses.

    Example:
        >>> from fapn.models import get_model
        >>> model = get_model("pointrend_semantic_resnet50_fapn", num_classes=19).eval()  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 67, 99)).shape  # doctest: +SKIP
        torch.Size([1, 19, 67, 99])
    """

    computes_loss = True
    size_divisibility = 32

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        conv_dims: int = 128,
        point_fc_dim: int = 256,
        point_num_fc: int = 3,
        coarse_pred_each_layer: bool = False,
        train_num_points: int = 2048,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
        ignore_index: int = 255,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        channels = int(backbone.out_channels)  # type: ignore[arg-type]
        self.coarse_head = SemanticFPNHead(channels, num_classes, conv_dims=conv_dims, norm_groups=norm_groups)
        self.point_head = StandardPointHead(channels, num_classes, point_fc_dim, point_num_fc, coarse_pred_each_layer)
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.ignore_index = ignore_index

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        """Args:
            images: ``[N, 3, H, W]`` normalised images.
            targets: ``[N, H, W]`` labels with ``ignore_index``, required in training.

        Returns:
            training: ``{"loss_sem_seg", "loss_sem_seg_point"}``; eval: ``[N, num_classes, H, W]`` logits.
        """
        height, width = images.shape[-2:]
        x = padded_images(images, self, self.size_divisibility)
        features = list(self.backbone(x).values())[: len(self.coarse_head.strides)]
        coarse = self.coarse_head.layers(features)
        if self.training:
            targets = padded_targets(targets, images, self.size_divisibility, self.ignore_index, type(self).__name__)
            return self.losses(coarse, features[0], targets)
        logits = self.subdivision_inference(coarse, features[0], (x.shape[-2], x.shape[-1]))
        return logits[..., :height, :width]

    def losses(self, coarse: Tensor, fine: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The coarse and point cross-entropies for padded ``targets`` ``[N, H, W]``."""
        upsampled = F.interpolate(coarse.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)
        loss_coarse = masked_cross_entropy(upsampled, targets, self.ignore_index)
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse,
                semantic_uncertainty,
                self.train_num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
        point_logits = self.point_head(point_sample(fine, coords), point_sample(coarse, coords))
        point_targets = point_sample(targets.unsqueeze(1).to(coords.dtype), coords, mode="nearest")
        point_targets = point_targets.squeeze(1).round().long()
        return {
            "loss_sem_seg": loss_coarse,
            "loss_sem_seg_point": masked_cross_entropy(point_logits, point_targets, self.ignore_index),
        }

    @torch.no_grad()
    def subdivision_inference(self, coarse: Tensor, fine: Tensor, size: tuple[int, int]) -> Tensor:
        """Refine the coarse logits by adaptive subdivision; returns logits at ``size`` (the padded input)."""
        logits = coarse
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            num, channels, height, width = logits.shape
            indices, coords = uncertain_points_on_grid(semantic_uncertainty(logits), self.subdivision_num_points)
            point_logits = self.point_head(point_sample(fine, coords), point_sample(coarse, coords))
            logits = (
                logits.reshape(num, channels, height * width)
                .scatter(2, indices.unsqueeze(1).expand(-1, channels, -1), point_logits.to(logits.dtype))
                .view(num, channels, height, width)
            )
        if tuple(logits.shape[-2:]) != size:  # steps that do not reach stride 1 [ours]
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
