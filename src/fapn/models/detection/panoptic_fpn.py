"""Panoptic FPN (Kirillov et al., 2019) on torchvision's Mask R-CNN, with the FaPN neck."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN

from fapn.models.backbones import BackboneWeights
from fapn.models.pyramid import resnet_pyramid
from fapn.models.registry import register_model
from fapn.models.semantic_fpn import SemanticFPNHead

__all__ = ["PanopticFPN", "panoptic_merge", "panoptic_fpn_resnet50_fapn", "panoptic_fpn_resnet101_fapn"]


def panoptic_merge(
    instance_masks: Tensor,
    instance_scores: Tensor,
    instance_labels: Tensor,
    semantic: Tensor,
    *,
    overlap_threshold: float = 0.5,
    stuff_area_threshold: int = 4096,
    instance_score_threshold: float = 0.5,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """detectron2's ``combine_semantic_and_instance_outputs``: instances first by score, then stuff.

    An instance is dropped when more than ``overlap_threshold`` of its mask is already taken, otherwise it
    takes its free pixels; then each stuff class of the semantic map takes its free pixels if they cover at
    least ``stuff_area_threshold``. Semantic class 0 is "thing" and never becomes a segment.

    Args:
        instance_masks: ``[K, H, W]`` bool.
        instance_scores: ``[K]``.
        instance_labels: ``[K]`` thing labels (as the detector predicts them).
        semantic: ``[H, W]`` semantic labels (0 = thing, ``1..S`` = stuff).
        overlap_threshold: largest fraction of an instance that may already be taken.
        stuff_area_threshold: smallest stuff segment area, in pixels.
        instance_score_threshold: instances below this score are ignored.

    Returns:
        ``(panoptic, segments)``: ``[H, W]`` int32 segment ids (0 = void) and one dict per segment with
        ``id``, ``isthing``, ``category_id`` (the detector's label for things, the semantic label for stuff),
        ``area``, and ``score`` for things.

    Example:
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> masks[0, :2] = True
        >>> pan, segs = panoptic_merge(
        ...     masks,
        ...     torch.tensor([0.9]),
        ...     torch.tensor([3]),
        ...     torch.ones(4, 4, dtype=torch.long),
        ...     stuff_area_threshold=1,
        ... )
        >>> pan.tolist(), [(s["id"], s["isthing"], s["category_id"]) for s in segs]
        ([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], [(1, True, 3), (2, False, 1)])
    """
    panoptic = torch.zeros(semantic.shape, dtype=torch.int32, device=semantic.device)
    segments: list[dict[str, Any]] = []
    current_id = 0
    instance_scores = instance_scores.detach()
    for index in torch.argsort(-instance_scores).tolist():
        score = float(instance_scores[index])
        if score < instance_score_threshold:
            break
        mask = instance_masks[index].bool()
        mask_area = int(mask.sum())
        if mask_area == 0:
            continue
        intersect_area = int((mask & (panoptic > 0)).sum())
        if intersect_area / mask_area > overlap_threshold:
            continue
        if intersect_area > 0:
            mask = mask & (panoptic == 0)
        current_id += 1
        panoptic[mask] = current_id
        segments.append(
            {
                "id": current_id,
                "isthing": True,
                "score": score,
                "category_id": int(instance_labels[index]),
                "instance_id": index,
                "area": int(mask.sum()),
            }
        )
    for label in torch.unique(semantic).tolist():
        if label == 0:
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = int(mask.sum())
        if area < stuff_area_threshold:
            continue
        current_id += 1
        panoptic[mask] = current_id
        segments.append({"id": current_id, "isthing": False, "category_id": int(label), "area": area})
    return panoptic, segments


class PanopticFPN(nn.Module):
    """Mask R-CNN and a semantic FPN head sharing one pyramid, trained jointly, merged at inference.

    Training targets are torchvision's (``boxes``, ``labels``, ``masks``) plus ``sem_seg``: ``[H, W]`` int64
    at the image's size, 0 for thing pixels, ``1..S`` for stuff, 255 ignored. The losses are the detector's
    plus ``semantic_loss_weight`` (0.5, detectron2's Panoptic FPN) x the semantic cross-entropy.

    At inference each output dict holds the detector's fields, ``sem_seg`` (``[S + 1, H, W]`` probabilities at
    the input size), ``panoptic_seg`` (``[H, W]`` int32) and ``segments_info`` (see :func:`panoptic_merge`).

    Args:
        detector: a torchvision ``MaskRCNN`` whose backbone returns strides 4-32 first (P2-P5, then pool).
        num_stuff_classes: stuff classes ``S``; the head predicts ``S + 1``.
        semantic_loss_weight: weight of the semantic loss (0.5).
        conv_dims: semantic head width (128).
        overlap_threshold, stuff_area_threshold, instance_score_threshold: see :func:`panoptic_merge`
            (detectron2: 0.5, 4096, 0.5).
        mask_threshold: instance mask probability threshold (0.5).

    Example:
        >>> model = panoptic_fpn_resnet50_fapn(num_classes=3, num_stuff_classes=2, min_size=128, max_size=128)
        >>> out = model.eval()([torch.rand(3, 128, 128)])[0]
        >>> out["panoptic_seg"].shape
        torch.Size([128, 128])
    """

    def __init__(
        self,
        detector: MaskRCNN,
        num_stuff_classes: int,
        *,
        semantic_loss_weight: float = 0.5,
        conv_dims: int = 128,
        overlap_threshold: float = 0.5,
        stuff_area_threshold: int = 4096,
        instance_score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.num_stuff_classes = num_stuff_classes
        self.semantic_head = SemanticFPNHead(detector.backbone.out_channels, num_stuff_classes + 1, conv_dims=conv_dims)
        self.semantic_loss_weight = semantic_loss_weight
        self.overlap_threshold = overlap_threshold
        self.stuff_area_threshold = stuff_area_threshold
        self.instance_score_threshold = instance_score_threshold
        self.mask_threshold = mask_threshold

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Any]]:
        """Args:
            images: ``[3, H, W]`` float images in ``[0, 1]``.
            targets: in training, one dict per image (see the class docstring).

        Returns:
            the loss dict in training (detector losses + ``loss_sem_seg``), else one dict per image.
        """
        if self.training and targets is None:
            raise ValueError("PanopticFPN needs targets in training mode")
        detector = self.detector
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        semantic_targets = None
        if targets is not None:
            if any("sem_seg" not in t for t in targets):
                raise ValueError("every PanopticFPN target needs a 'sem_seg' [H, W] map")
            semantic_targets = [t["sem_seg"] for t in targets]
            targets = [{k: v for k, v in t.items() if k != "sem_seg"} for t in targets]
        image_list, targets = detector.transform(images, targets)
        features = detector.backbone(image_list.tensors)
        levels = list(features.values())[: len(self.semantic_head.strides)]
        semantic_logits = self.semantic_head(levels)
        proposals, proposal_losses = detector.rpn(image_list, features, targets)
        detections, detector_losses = detector.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            assert semantic_targets is not None
            padded = torch.full(
                semantic_logits.shape[:1] + semantic_logits.shape[2:],
                255,
                dtype=torch.long,
                device=semantic_logits.device,
            )
            for i, (target, (height, width)) in enumerate(zip(semantic_targets, image_list.image_sizes)):
                resized = F.interpolate(target[None, None].float(), size=(height, width), mode="nearest")
                padded[i, :height, :width] = resized[0, 0].long()
            losses = {**proposal_losses, **detector_losses}
            losses["loss_sem_seg"] = self.semantic_loss_weight * SemanticFPNHead.loss(semantic_logits, padded)
            return losses
        detections = detector.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        results: list[dict[str, Any]] = []
        for i, detection in enumerate(detections):
            height, width = image_list.image_sizes[i]
            logits = semantic_logits[i : i + 1, :, :height, :width]
            logits = F.interpolate(logits, size=original_sizes[i], mode="bilinear", align_corners=False)[0]
            semantic = logits.argmax(0)
            panoptic, segments = panoptic_merge(
                detection["masks"][:, 0] >= self.mask_threshold,
                detection["scores"],
                detection["labels"],
                semantic,
                overlap_threshold=self.overlap_threshold,
                stuff_area_threshold=self.stuff_area_threshold,
                instance_score_threshold=self.instance_score_threshold,
            )
            results.append(
                {**detection, "sem_seg": logits.softmax(0), "panoptic_seg": panoptic, "segments_info": segments}
            )
        return results


def _panoptic(
    depth: int,
    num_classes: int,
    num_stuff_classes: int,
    weights_backbone: BackboneWeights,
    trainable_backbone_layers: int | None,
    fapn_kwargs: dict[str, Any] | None,
    panoptic_kwargs: dict[str, Any] | None,
    kwargs: dict[str, Any],
) -> PanopticFPN:
    backbone = resnet_pyramid(
        f"resnet{depth}",
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        fapn_kwargs=fapn_kwargs,
    )
    return PanopticFPN(
        MaskRCNN(backbone, num_classes=num_classes, **kwargs), num_stuff_classes, **(panoptic_kwargs or {})
    )


@register_model(task="detection")
def panoptic_fpn_resnet50_fapn(
    *,
    num_classes: int,
    num_stuff_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    panoptic_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PanopticFPN:
    """Panoptic FPN, ResNet-50 + FaPN.

    Args:
        num_classes: thing classes + background, for the Mask R-CNN (81 for COCO panoptic).
        num_stuff_classes: stuff classes (53 for COCO panoptic).
        weights_backbone: ImageNet weights (enum, name or ``.pth`` path), or ``None``.
        trainable_backbone_layers: 0 to 5.
        fapn_kwargs: extra arguments of :class:`fapn.FaPN`.
        panoptic_kwargs: extra arguments of :class:`PanopticFPN` (thresholds, loss weight).
        **kwargs: passed to ``MaskRCNN``.
    """
    return _panoptic(
        50,
        num_classes,
        num_stuff_classes,
        weights_backbone,
        trainable_backbone_layers,
        fapn_kwargs,
        panoptic_kwargs,
        kwargs,
    )


@register_model(task="detection")
def panoptic_fpn_resnet101_fapn(
    *,
    num_classes: int,
    num_stuff_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    panoptic_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PanopticFPN:
    """Panoptic FPN, ResNet-101 + FaPN; arguments as :func:`panoptic_fpn_resnet50_fapn`."""
    return _panoptic(
        101,
        num_classes,
        num_stuff_classes,
        weights_backbone,
        trainable_backbone_layers,
        fapn_kwargs,
        panoptic_kwargs,
        kwargs,
    )
