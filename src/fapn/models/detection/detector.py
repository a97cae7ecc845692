"""The body of every ``<detector>_resnet<depth>_<neck>`` builder: a detector class on a ResNet pyramid, with the
model's weights loaded, as torchvision's ``maskrcnn_resnet50_fpn`` builds it.

The detection builders (:mod:`fapn.models.detection.builders`) and PointRend's Mask R-CNN builders
(:mod:`fapn.models.pointrend.builders`) call it, so they share torchvision's rules: the model's weights replace
the backbone's ImageNet weights, and a model that will hold trained weights gets frozen batch norm and three
trainable stages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn
from torchvision.models.detection import RetinaNet

from fapn.models.backbones import BackboneWeights
from fapn.models.pyramid import Neck, resnet_pyramid
from fapn.state_dict import ModelWeights, load_model_weights

__all__ = ["resnet_detector"]

Detector = TypeVar("Detector", bound=nn.Module)


def resnet_detector(
    detector: Callable[..., Detector],
    depth: int,
    neck: Neck,
    weights: ModelWeights,
    num_classes: int | None,
    weights_backbone: BackboneWeights,
    trainable_backbone_layers: int | None,
    fapn_kwargs: dict[str, Any] | None,
    detector_kwargs: dict[str, Any],
) -> Detector:
    """``detector(resnet_pyramid(f"resnet{depth}", neck=neck, ...), num_classes, **detector_kwargs)`` with
    ``weights`` loaded.

    Args:
        detector: the detector class (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``, ``PointRendMaskRCNN``); RetinaNet
            gets P3-P7 (P6/P7 from C5), the others P2-P6.
        depth: ResNet depth (50, 101, ...).
        neck: ``"fapn"`` or ``"fpn"``.
        weights: the model's weights (a state dict path or a fapn checkpoint), or ``None``.
        num_classes: classes including background; ``None``: 91 (COCO's raw ids, as torchvision).
        weights_backbone: ImageNet weights of the ResNet; ignored when ``weights`` is given (they contain it).
        trainable_backbone_layers, fapn_kwargs: as :func:`fapn.models.pyramid.resnet_pyramid`.
        detector_kwargs: the detector's own arguments (``min_size``, ...).

    Example:
        >>> from torchvision.models.detection import FasterRCNN
        >>> model = resnet_detector(FasterRCNN, 18, "fpn", None, 3, None, None, None, {"min_size": 64})
        >>> type(model.backbone).__name__, model.roi_heads.box_predictor.cls_score.out_features
        ('BackboneWithFPN', 3)
    """
    if weights is not None:
        weights_backbone = None  # the model's weights contain the backbone's
    pyramid = resnet_pyramid(
        f"resnet{depth}",
        neck=neck,
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        is_trained=weights is not None or weights_backbone is not None,
        levels="p3-p7" if detector is RetinaNet else "p2-p6",
        fapn_kwargs=fapn_kwargs,
    )
    model = detector(pyramid, num_classes=91 if num_classes is None else num_classes, **detector_kwargs)
    load_model_weights(model, weights)
    return model
