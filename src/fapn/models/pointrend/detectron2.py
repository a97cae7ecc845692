"""PointRend models in the authors' detectron2 configuration, ready for their converted checkpoints.

``fapn convert`` maps the authors' PointRend checkpoints (:mod:`fapn.convert.pointrend`) onto these: the
detectron2-style ResNet (stride in the 1x1 conv, frozen BN; :func:`~fapn.models.detection.detectron2_resnet`) under
the FaPN neck, and PointRend's heads. Images are caffe-normalised as in detectron2: for the R-CNN the transform
does it (``detectron2_fapn_rcnn``); the semantic model takes normalised images like every semantic model here, so
set ``data.mean = [0.485, 0.456, 0.406]`` (detectron2's BGR ``PIXEL_MEAN`` in RGB order over 255) and
``data.std = [0.00392156862745098] * 3`` (1 / 255) for converted weights.
"""

from __future__ import annotations

from typing import Any

from torchvision.models.detection import FasterRCNN

from fapn.models.detection.detectron2 import detectron2_fapn_rcnn, detectron2_resnet
from fapn.models.pointrend.mask_rcnn import PointRendMaskHead, PointRendRoIHeads
from fapn.models.pointrend.semantic import PointRendSemanticFPN
from fapn.models.pyramid import resnet_fapn_extractor
from fapn.models.registry import register_model

__all__ = [
    "detectron2_pointrend_semantic",
    "detectron2_pointrend_rcnn",
    "DETECTRON2_SEMANTIC_MEAN",
    "DETECTRON2_SEMANTIC_STD",
]

DETECTRON2_SEMANTIC_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
"""``data.mean`` for converted semantic weights (detectron2's caffe ``PIXEL_MEAN``, RGB, over 255)."""
DETECTRON2_SEMANTIC_STD = (1 / 255, 1 / 255, 1 / 255)
"""``data.std`` for converted semantic weights (detectron2's ``PIXEL_STD`` 1 on the 0-255 scale)."""


@register_model()
def detectron2_pointrend_semantic(
    depth: int = 50, *, num_classes: int = 19, ignore_index: int = 255, **kwargs: Any
) -> PointRendSemanticFPN:
    """The authors' ``pointrend_semantic_R_{50,101}_FAN_1x_cityscapes``: detectron2 ResNet + FaPN + PointRend.

    Args:
        depth: 50 or 101.
        num_classes: 19 for Cityscapes.
        ignore_index: label ignored in training.
        **kwargs: :class:`PointRendSemanticFPN` options (the defaults are the authors' Cityscapes values).

    Example:
        >>> from fapn.convert.pointrend import convert_pointrend
        >>> model = detectron2_pointrend_semantic(50)  # doctest: +SKIP
        >>> model.load_state_dict(convert_pointrend(state)[0])  # doctest: +SKIP
    """
    backbone = resnet_fapn_extractor(detectron2_resnet(depth), trainable_layers=5)
    return PointRendSemanticFPN(backbone, num_classes, ignore_index=ignore_index, **kwargs)


@register_model(task="detection")
def detectron2_pointrend_rcnn(
    depth: int = 50,
    *,
    num_classes: int = 81,
    mask_head_kwargs: dict[str, Any] | None = None,
    train_on_pred_boxes: bool = True,
    **kwargs: Any,
) -> FasterRCNN:
    """The authors' ``pointrend_rcnn_R_50_FAN_1x_coco``: :func:`~fapn.models.detection.detectron2_fapn_rcnn`'s
    detector with :class:`PointRendRoIHeads` (a PointRend Mask R-CNN, as :class:`PointRendMaskRCNN`).

    Args:
        depth: 50 or 101.
        num_classes: 81 for COCO (background at 0).
        mask_head_kwargs: :class:`PointRendMaskHead` options.
        train_on_pred_boxes: see :class:`PointRendRoIHeads`.
        **kwargs: passed to ``detectron2_fapn_rcnn`` (and on to ``FasterRCNN``).
    """
    model = detectron2_fapn_rcnn(depth, mask=False, num_classes=num_classes, **kwargs)
    head = PointRendMaskHead(int(model.backbone.out_channels), num_classes - 1, **(mask_head_kwargs or {}))
    model.roi_heads = PointRendRoIHeads(model.roi_heads, head, train_on_pred_boxes)
    return model
