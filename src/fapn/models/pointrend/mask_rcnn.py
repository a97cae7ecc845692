"""PointRend instance segmentation on torchvision's Mask R-CNN: a coarse mask head plus a point head.

torchvision's ``RoIHeads`` runs the mask branch inline in its ``forward`` (RoIAlign -> conv head -> 28x28
predictor), with no hook for a head that samples points. :class:`PointRendRoIHeads` therefore subclasses it and
overrides ``forward`` only: the box branch is torchvision's own methods and functions called in the same order
(``select_training_samples``, ``box_roi_pool``, ``box_head``, ``box_predictor``, ``fastrcnn_loss``,
``postprocess_detections``); the mask branch is one call into :class:`PointRendMaskHead`. Everything outside the
RoI heads (transform, backbone, RPN, mask pasting) is torchvision's :class:`FasterRCNN` unchanged.

Differences from detectron2's PointRend, all [ours]: the coarse mask loss is torchvision's ``maskrcnn_loss``
(RoIAlign targets with ``aligned=False``, not binarised) as for torchvision's Mask R-CNN baseline; masks are
pasted by torchvision's ``paste_masks_in_image``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss

from fapn.models.pointrend.coarse_mask_head import CoarseMaskHead
from fapn.models.pointrend.point_features import (
    mask_uncertainty,
    point_sample,
    regular_grid_points,
    roi_point_features,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from fapn.models.pointrend.point_head import StandardPointHead

__all__ = ["PointRendMaskHead", "PointRendRoIHeads", "PointRendMaskRCNN"]


class PointRendMaskHead(nn.Module):
    """detectron2's ``PointRendMaskHead`` [pointrend]: coarse masks from regular-grid RoI features of one pyramid
    level, refined by a point head on the same level.

    Masks are predicted for the ``num_classes`` *foreground* classes (torchvision label ``l`` is channel
    ``l - 1``), as detectron2 does, so the authors' weights load without a background row [ours].

    Training, per positive RoI: ``loss_mask`` on the ``coarse_size`` coarse mask, and ``loss_mask_point`` (binary
    cross-entropy) at ``train_num_points`` points chosen by uncertainty (``-|logit|`` of the true class) with
    oversampling, against the ground-truth mask bilinearly sampled there. Inference: the point head on a regular
    grid, then adaptive subdivision: upsample 2x, recompute the ``subdivision_num_points`` most uncertain cells of
    the predicted class. Like detectron2, the initial grid is doubled while the whole grid after one subdivision
    still fits in ``subdivision_num_points`` (7 -> 28 with 784 points), one step less each time: 5 steps from 7x7
    are 3 steps from 28x28, a 224x224 mask.

    Args:
        in_channels: channels of the pyramid level (256).
        num_classes: foreground classes.
        in_feature: the level's key in the backbone's output (``"0"`` = P2 in torchvision's naming).
        stride: the level's stride (4).
        pooler_size: side of the regular point grid pooled for the coarse head (14).
        coarse_size: side of the coarse masks (7).
        conv_dim, fc_dims: coarse head (256, (1024, 1024)).
        point_fc_dim, point_num_fc, coarse_pred_each_layer: point head (256, 3, ``True``).
        train_num_points: points per RoI in training (14 x 14 = 196).
        oversample_ratio, importance_sample_ratio: training point selection (3, 0.75).
        subdivision_steps, subdivision_num_points: inference (5, 28 x 28 = 784).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        in_feature: str = "0",
        stride: int = 4,
        pooler_size: int = 14,
        coarse_size: int = 7,
        conv_dim: int = 256,
        fc_dims: tuple[int, ...] = (1024, 1024),
        point_fc_dim: int = 256,
        point_num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
        train_num_points: int = 14 * 14,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 5,
        subdivision_num_points: int = 28 * 28,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_feature = in_feature
        self.stride = stride
        self.pooler_size = pooler_size
        self.coarse_head = CoarseMaskHead(in_channels, num_classes, pooler_size, conv_dim, fc_dims, coarse_size)
        self.point_head = StandardPointHead(
            in_channels, num_classes, point_fc_dim, point_num_fc, coarse_pred_each_layer
        )
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_num_points = subdivision_num_points
        resolution, steps = coarse_size, subdivision_steps
        while steps > 0 and 4 * resolution**2 <= subdivision_num_points:
            resolution, steps = resolution * 2, steps - 1
        self.subdivision_init_resolution = resolution
        self.subdivision_steps = steps

    def coarse_masks(self, feature: Tensor, boxes: list[Tensor]) -> Tensor:
        """Coarse mask logits ``[sum R_i, num_classes, coarse_size, coarse_size]`` for boxes in image pixels."""
        num_boxes = sum(len(b) for b in boxes)
        grid = regular_grid_points(num_boxes, self.pooler_size, feature.device, feature.dtype)
        pooled = roi_point_features(feature, boxes, grid, self.stride)
        return self.coarse_head(pooled.reshape(num_boxes, feature.shape[1], self.pooler_size, self.pooler_size))

    def point_logits(self, feature: Tensor, boxes: list[Tensor], coords: Tensor, coarse: Tensor) -> Tensor:
        """The point head at box-normalised ``coords`` ``[R, P, 2]``: ``[R, num_classes, P]`` logits."""
        return self.point_head(roi_point_features(feature, boxes, coords, self.stride), point_sample(coarse, coords))

    def losses(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        gt_masks: list[Tensor],
        gt_labels: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_mask`` and ``loss_mask_point`` for the positive RoIs of each image.

        Args:
            features: the backbone's maps.
            boxes: per image, the positive RoIs ``[R_i, 4]`` (proposals, or the predicted boxes).
            gt_masks: per image, ``[G_i, H, W]`` ground-truth masks at the transformed image size.
            gt_labels: per image, ``[G_i]`` labels ``1..num_classes``.
            matched_idxs: per image, ``[R_i]`` index of each RoI's ground truth.
        """
        feature = features[self.in_feature]
        coarse = self.coarse_masks(feature, boxes)
        padded = F.pad(coarse, (0, 0, 0, 0, 1, 0))  # torchvision's maskrcnn_loss indexes channels by label
        loss_mask = maskrcnn_loss(padded, boxes, gt_masks, gt_labels, matched_idxs)
        labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs)])
        if coarse.shape[0] == 0:
            return {"loss_mask": loss_mask, "loss_mask_point": coarse.sum() * 0.0}
        channels = labels.long() - 1
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse,
                lambda logits: mask_uncertainty(logits, channels),
                self.train_num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = _sample_gt_masks(gt_masks, boxes, matched_idxs, coords)
        logits = self.point_logits(feature, boxes, coords, coarse)
        chosen = logits[torch.arange(len(channels), device=logits.device), channels]
        loss_point = F.binary_cross_entropy_with_logits(chosen, point_labels, reduction="mean")
        return {"loss_mask": loss_mask, "loss_mask_point": loss_point}

    @torch.no_grad()
    def predict(self, features: dict[str, Tensor], boxes: list[Tensor], labels: list[Tensor]) -> list[Tensor]:
        """Mask probabilities ``[R_i, 1, M, M]`` of each detection's class, ``M = init * 2**steps`` (224)."""
        feature = features[self.in_feature]
        counts = [len(b) for b in boxes]
        side = self.subdivision_init_resolution * 2**self.subdivision_steps
        if sum(counts) == 0:
            return [feature.new_zeros((0, 1, side, side)) for _ in boxes]
        coarse = self.coarse_masks(feature, boxes)
        channels = torch.cat(labels).long() - 1
        resolution = self.subdivision_init_resolution
        grid = regular_grid_points(len(channels), resolution, feature.device, feature.dtype)
        logits = self.point_logits(feature, boxes, grid, coarse).reshape(-1, self.num_classes, resolution, resolution)
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            num, classes, height, width = logits.shape
            indices, coords = uncertain_points_on_grid(mask_uncertainty(logits, channels), self.subdivision_num_points)
            refined = self.point_logits(feature, boxes, coords, coarse)
            logits = (
                logits.reshape(num, classes, height * width)
                .scatter(2, indices.unsqueeze(1).expand(-1, classes, -1), refined)
                .view(num, classes, height, width)
            )
        chosen = logits[torch.arange(len(channels), device=logits.device), channels].unsqueeze(1)
        return list(chosen.sigmoid().split(counts))


def _sample_gt_masks(gt_masks: list[Tensor], boxes: list[Tensor], matched_idxs: list[Tensor], coords: Tensor) -> Tensor:
    """Each RoI's ground-truth mask bilinearly sampled at its box-normalised points, ``[R, P]`` in ``[0, 1]``
    (detectron2's ``sample_point_labels``); one ``grid_sample`` per ground-truth mask, so no ``[R, H, W]`` copy."""
    labels = coords.new_zeros(coords.shape[:2])
    start = 0
    for masks, rois, matched in zip(gt_masks, boxes, matched_idxs):
        if len(rois) == 0:
            continue
        height, width = masks.shape[-2:]
        scale = torch.tensor([width, height], dtype=coords.dtype, device=coords.device)
        rows = torch.arange(start, start + len(rois), device=coords.device)
        points = (rois[:, None, :2] + coords[rows] * (rois[:, None, 2:] - rois[:, None, :2])) / scale
        for gt in matched.unique().tolist():
            select = matched == gt
            sampled = point_sample(masks[gt][None, None].to(coords.dtype), points[select].reshape(1, -1, 2))
            labels[rows[select]] = sampled.reshape(-1, coords.shape[1])
        start += len(rois)
    return labels


class PointRendRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with a PointRend mask branch (see the module docstring).

    Args:
        roi_heads: a built ``RoIHeads`` (e.g. a ``FasterRCNN``'s) whose box branch, matcher, sampler, box coder
            and test thresholds are taken over unchanged.
        mask_head: the PointRend mask head.
        train_on_pred_boxes: train the mask branch on the box head's predicted boxes for the true class instead
            of the proposals (detectron2's ``TRAIN_ON_PRED_BOXES``, on in the authors' PointRend config).
    """

    def __init__(self, roi_heads: RoIHeads, mask_head: PointRendMaskHead, train_on_pred_boxes: bool = True) -> None:
        matcher, sampler = roi_heads.proposal_matcher, roi_heads.fg_bg_sampler
        super().__init__(
            roi_heads.box_roi_pool,
            roi_heads.box_head,
            roi_heads.box_predictor,
            matcher.high_threshold,
            matcher.low_threshold,
            sampler.batch_size_per_image,
            sampler.positive_fraction,
            roi_heads.box_coder.weights,
            roi_heads.score_thresh,
            roi_heads.nms_thresh,
            roi_heads.detections_per_img,
        )
        self.proposal_matcher = matcher
        self.mask_head = mask_head
        self.train_on_pred_boxes = train_on_pred_boxes

    def has_mask(self) -> bool:
        return True

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None or any("masks" not in t for t in targets):
                raise ValueError("PointRend training needs targets with 'boxes', 'labels' and 'masks'")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if not self.training:
            boxes, scores, classes = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            masks = self.mask_head.predict(features, boxes, classes)
            result = [
                {"boxes": b, "labels": c, "scores": s, "masks": m} for b, c, s, m in zip(boxes, classes, scores, masks)
            ]
            return result, {}
        assert targets is not None
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        if self.train_on_pred_boxes:
            with torch.no_grad():
                decoded = self.box_coder.decode(box_regression.detach(), proposals)  # [sum R, classes, 4]
                index = torch.arange(decoded.shape[0], device=decoded.device)
                predicted = decoded[index, torch.cat(labels)].split([len(p) for p in proposals])
            roi_boxes = list(predicted)
        else:
            roi_boxes = proposals
        mask_boxes, mask_matched = [], []
        for boxes, image_labels, matched in zip(roi_boxes, labels, matched_idxs):
            positive = torch.where(image_labels > 0)[0]
            mask_boxes.append(boxes[positive])
            mask_matched.append(matched[positive])
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        losses.update(
            self.mask_head.losses(
                features, mask_boxes, [t["masks"] for t in targets], [t["labels"] for t in targets], mask_matched
            )
        )
        return [], losses


class PointRendMaskRCNN(FasterRCNN):
    """Mask R-CNN with PointRend's mask head: torchvision's ``FasterRCNN`` with :class:`PointRendRoIHeads`.

    Same calling convention as ``torchvision.models.detection.MaskRCNN``: a list of ``[3, H, W]`` images (and
    targets with ``boxes``, ``labels``, ``masks`` in training) in; losses in training, or per image ``boxes``,
    ``labels``, ``scores`` and ``masks`` ``[R, 1, H, W]`` probabilities at the image size in eval.

    Args:
        backbone: returns an ordered dict of pyramid maps (P2 first) and has ``out_channels``.
        num_classes: classes including background (torchvision's convention).
        mask_head_kwargs: arguments of :class:`PointRendMaskHead` (points, subdivision, head sizes).
        train_on_pred_boxes: see :class:`PointRendRoIHeads`.
        **kwargs: passed to ``FasterRCNN`` (``min_size``, ``box_batch_size_per_image``, ...).

    Example:
        >>> from fapn.models import get_model
        >>> model = get_model(
        ...     "pointrend_maskrcnn_resnet50_fapn", num_classes=3, min_size=128, max_size=128, box_detections_per_img=2
        ... )
        >>> sorted(model.eval()([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'masks', 'scores']
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        mask_head_kwargs: dict[str, Any] | None = None,
        train_on_pred_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, num_classes=num_classes, **kwargs)
        channels = int(backbone.out_channels)  # type: ignore[arg-type]
        head = PointRendMaskHead(channels, num_classes - 1, **(mask_head_kwargs or {}))
        # torchvision's GeneralizedRCNN sets roi_heads without an annotation mypy can read
        self.roi_heads = PointRendRoIHeads(self.roi_heads, head, train_on_pred_boxes)  # type: ignore[has-type]
