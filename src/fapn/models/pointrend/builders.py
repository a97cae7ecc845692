"""Registered builders: PointRend semantic segmentation and PointRend Mask R-CNN, on FaPN or on FPN (baseline).

``pointrend_semantic`` (any ResNet, either neck) and ``pointrend_semantic_resnet{50,101}_{fapn,fpn}`` follow the
semantic contract (``computes_loss = True``, ``ignore_index``); ``pointrend_maskrcnn_resnet50_{fapn,fpn}`` follow
torchvision's ``maskrcnn_resnet50_fpn``.
"""

from __future__ import annotations

from typing import Any

from fapn.models.backbones import BackboneWeights
from fapn.models.detection.detector import resnet_detector
from fapn.models.pointrend.mask_rcnn import PointRendMaskRCNN
from fapn.models.pointrend.semantic import PointRendSemanticFPN
from fapn.models.pyramid import Neck, resnet_pyramid
from fapn.models.registry import register_model
from fapn.state_dict import ModelWeights

__all__ = [
    "pointrend_semantic",
    "pointrend_semantic_resnet50_fapn",
    "pointrend_semantic_resnet101_fapn",
    "pointrend_semantic_resnet50_fpn",
    "pointrend_semantic_resnet101_fpn",
    "pointrend_maskrcnn_resnet50_fapn",
    "pointrend_maskrcnn_resnet50_fpn",
]


@register_model()
def pointrend_semantic(
    backbone: str = "resnet50",
    num_classes: int = 19,
    weights_backbone: BackboneWeights = None,
    *,
    neck: Neck = "fapn",
    trainable_backbone_layers: int | None = None,
    ignore_index: int = 255,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PointRendSemanticFPN:
    """PointRend semantic segmentation (semantic FPN coarse head + point head on P2) on any ResNet + FaPN or FPN.

    Args:
        backbone: a torchvision ResNet name (``"resnet18"`` ... ``"resnet101"``) or ``"timm:<name>"``.
        num_classes: classes (19 for Cityscapes).
        weights_backbone: ImageNet weights (enum, its name, or a ``.pth``), or ``None`` (from scratch).
        neck: ``"fapn"`` or ``"fpn"`` (torchvision's, the baseline).
        trainable_backbone_layers: 0-5; default 5 with weights (the authors' ``FREEZE_AT: 0``), batch norm frozen.
        ignore_index: label ignored by the losses.
        fapn_kwargs: extra :class:`fapn.FaPN` arguments (ablations).
        **kwargs: :class:`~fapn.models.pointrend.PointRendSemanticFPN` options (``train_num_points``,
            ``subdivision_steps``, ``subdivision_num_points``, ...).

    Example:
        >>> import torch
        >>> model = pointrend_semantic("resnet18", num_classes=5, neck="fpn").eval()
        >>> model(torch.randn(1, 3, 45, 70)).shape
        torch.Size([1, 5, 45, 70])
    """
    if trainable_backbone_layers is None and weights_backbone is not None:
        trainable_backbone_layers = 5  # FREEZE_AT: 0 in the authors' semantic config; batch norm stays frozen
    pyramid = resnet_pyramid(
        backbone,
        neck=neck,
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        fapn_kwargs=fapn_kwargs,
    )
    return PointRendSemanticFPN(pyramid, num_classes, ignore_index=ignore_index, **kwargs)


def _semantic(
    depth: int,
    neck: Neck,
    num_classes: int,
    weights_backbone: BackboneWeights,
    trainable_backbone_layers: int | None,
    ignore_index: int,
    fapn_kwargs: dict[str, Any] | None,
    kwargs: dict[str, Any],
) -> PointRendSemanticFPN:
    return pointrend_semantic(
        f"resnet{depth}",
        num_classes,
        weights_backbone,
        neck=neck,
        trainable_backbone_layers=trainable_backbone_layers,
        ignore_index=ignore_index,
        fapn_kwargs=fapn_kwargs,
        **kwargs,
    )


@register_model()
def pointrend_semantic_resnet50_fapn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    ignore_index: int = 255,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PointRendSemanticFPN:
    """PointRend semantic segmentation on ResNet-50 + FaPN: the paper's Cityscapes model (80.0 mIoU).

    Args:
        num_classes: classes (19 for Cityscapes).
        weights_backbone: ImageNet weights (enum, its name, or a ``.pth``), or ``None`` (from scratch).
        trainable_backbone_layers: 0-5; default 5 with weights (the authors' ``FREEZE_AT: 0``), batch norm frozen.
        ignore_index: label ignored by the losses.
        fapn_kwargs: extra :class:`fapn.FaPN` arguments (ablations).
        **kwargs: :class:`~fapn.models.pointrend.PointRendSemanticFPN` options (``train_num_points``,
            ``subdivision_steps``, ``subdivision_num_points``, ...).

    Example:
        >>> import torch
        >>> model = pointrend_semantic_resnet50_fapn(num_classes=19).eval()  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 67, 99)).shape  # doctest: +SKIP
        torch.Size([1, 19, 67, 99])
    """
    return _semantic(
        50, "fapn", num_classes, weights_backbone, trainable_backbone_layers, ignore_index, fapn_kwargs, kwargs
    )


@register_model()
def pointrend_semantic_resnet101_fapn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    ignore_index: int = 255,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PointRendSemanticFPN:
    """PointRend semantic segmentation on ResNet-101 + FaPN (80.1 mIoU); arguments as the ResNet-50 builder."""
    return _semantic(
        101, "fapn", num_classes, weights_backbone, trainable_backbone_layers, ignore_index, fapn_kwargs, kwargs
    )


@register_model()
def pointrend_semantic_resnet50_fpn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    ignore_index: int = 255,
    **kwargs: Any,
) -> PointRendSemanticFPN:
    """The FPN baseline: PointRend semantic segmentation on ResNet-50 + torchvision's FPN."""
    return _semantic(50, "fpn", num_classes, weights_backbone, trainable_backbone_layers, ignore_index, None, kwargs)


@register_model()
def pointrend_semantic_resnet101_fpn(
    *,
    num_classes: int,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    ignore_index: int = 255,
    **kwargs: Any,
) -> PointRendSemanticFPN:
    """The FPN baseline on ResNet-101 (detectron2's ``pointrend_semantic_R_101_FPN_1x_cityscapes``: 78.9 mIoU)."""
    return _semantic(101, "fpn", num_classes, weights_backbone, trainable_backbone_layers, ignore_index, None, kwargs)


@register_model(task="detection")
def pointrend_maskrcnn_resnet50_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PointRendMaskRCNN:
    """Mask R-CNN with PointRend on ResNet-50 + FaPN (the authors' 37.6 mask AP, against 36.2 for FPN).

    Same arguments as :func:`fapn.models.detection.maskrcnn_resnet50_fapn`; ``**kwargs`` go to
    :class:`~fapn.models.pointrend.PointRendMaskRCNN` (``mask_head_kwargs``, ``train_on_pred_boxes``) and on to
    ``FasterRCNN`` (``min_size``, ``box_batch_size_per_image``, ...).

    Example:
        >>> import torch
        >>> model = pointrend_maskrcnn_resnet50_fapn(
        ...     num_classes=3, min_size=128, max_size=128, box_detections_per_img=2
        ... ).eval()
        >>> sorted(model([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'masks', 'scores']
    """
    del progress
    return resnet_detector(
        PointRendMaskRCNN,
        50,
        "fapn",
        weights,
        num_classes,
        weights_backbone,
        trainable_backbone_layers,
        fapn_kwargs,
        kwargs,
    )


@register_model(task="detection")
def pointrend_maskrcnn_resnet50_fpn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> PointRendMaskRCNN:
    """The FPN baseline: Mask R-CNN with PointRend on ResNet-50 + torchvision's FPN; arguments as above."""
    del progress
    return resnet_detector(
        PointRendMaskRCNN, 50, "fpn", weights, num_classes, weights_backbone, trainable_backbone_layers, None, kwargs
    )
