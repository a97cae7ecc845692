"""torchvision's detection builders with FaPN instead of FPN: switching is one word.

``torchvision.models.detection.maskrcnn_resnet50_fpn(...)`` -> ``fapn.models.detection.maskrcnn_resnet50_fapn(...)``
with the same keyword arguments. There are no COCO weights for these models in torchvision's hub, so
``weights`` is a path to a state dict (e.g. one written by ``fapn train`` or ``fapn convert``).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet

from fapn.models.backbones import BackboneWeights
from fapn.models.detection.detector import resnet_detector
from fapn.models.detection.panoptic_fpn import PanopticFPN
from fapn.models.pyramid import NECKS, Neck, resnet_pyramid
from fapn.models.registry import register_model
from fapn.state_dict import ModelWeights

__all__ = [
    "fasterrcnn_resnet50_fapn",
    "fasterrcnn_resnet101_fapn",
    "maskrcnn_resnet50_fapn",
    "maskrcnn_resnet101_fapn",
    "retinanet_resnet50_fapn",
    "retinanet_resnet101_fapn",
    "build_detection_model",
    "DETECTORS",
    "NECKS",
]


@register_model(task="detection")
def fasterrcnn_resnet50_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN, ResNet-50 + FaPN (P2-P6): ``torchvision.models.detection.fasterrcnn_resnet50_fpn`` with FaPN.

    Args:
        weights: path to a state dict of this model (torchvision has no FaPN weights), or ``None``.
        progress: unused, kept for torchvision's signature.
        num_classes: classes including background (91 for COCO's raw ids, as torchvision).
        weights_backbone: ImageNet weights for ResNet-50 (enum, its name, or a ``.pth`` path).
        trainable_backbone_layers: 0 to 5; default 3 with weights, 5 without.
        fapn_kwargs: extra arguments of :class:`fapn.FaPN` (e.g. ``{"feature_alignment": False}``).
        **kwargs: passed to ``FasterRCNN`` (``min_size``, ``rpn_post_nms_top_n_train``, ...).

    Example:
        >>> import torch
        >>> model = fasterrcnn_resnet50_fapn(num_classes=3, min_size=128, max_size=128).eval()
        >>> sorted(model([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'scores']
    """
    del progress
    return resnet_detector(
        FasterRCNN, 50, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


@register_model(task="detection")
def fasterrcnn_resnet101_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN, ResNet-101 + FaPN; arguments as :func:`fasterrcnn_resnet50_fapn`."""
    del progress
    return resnet_detector(
        FasterRCNN, 101, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


@register_model(task="detection")
def maskrcnn_resnet50_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN, ResNet-50 + FaPN: ``torchvision.models.detection.maskrcnn_resnet50_fpn`` with FaPN.

    Args: as :func:`fasterrcnn_resnet50_fapn`; ``**kwargs`` go to ``MaskRCNN``.

    Example:
        >>> import torch
        >>> model = maskrcnn_resnet50_fapn(num_classes=3, min_size=128, max_size=128).eval()
        >>> sorted(model([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'masks', 'scores']
    """
    del progress
    return resnet_detector(
        MaskRCNN, 50, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


@register_model(task="detection")
def maskrcnn_resnet101_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN, ResNet-101 + FaPN; arguments as :func:`maskrcnn_resnet50_fapn`."""
    del progress
    return resnet_detector(
        MaskRCNN, 101, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


@register_model(task="detection")
def retinanet_resnet50_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """RetinaNet, ResNet-50 + FaPN on C3-C5 with P6/P7 from C5, as the authors' ``LastLevelP6P7(2048, 256)``.

    torchvision's ``retinanet_resnet50_fpn`` (v1) computes P6 from P5; its ``_v2``, detectron2 and the authors'
    FaPN RetinaNet from C5.

    Args: as :func:`fasterrcnn_resnet50_fapn`; ``**kwargs`` go to ``RetinaNet``.
    """
    del progress
    return resnet_detector(
        RetinaNet, 50, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


@register_model(task="detection")
def retinanet_resnet101_fapn(
    *,
    weights: ModelWeights = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """RetinaNet, ResNet-101 + FaPN; arguments as :func:`retinanet_resnet50_fapn`."""
    del progress
    return resnet_detector(
        RetinaNet, 101, "fapn", weights, num_classes, weights_backbone, trainable_backbone_layers, fapn_kwargs, kwargs
    )


DETECTORS = ("fasterrcnn", "maskrcnn", "retinanet", "panoptic_fpn", "pointrend_maskrcnn")


@register_model(task="detection")
def build_detection_model(
    *,
    detector: str = "maskrcnn",
    backbone: str = "resnet50",
    neck: Neck = "fapn",
    num_classes: int = 91,
    num_stuff_classes: int = 0,
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    panoptic_kwargs: dict[str, Any] | None = None,
    frozen_batch_norm: bool | None = None,
    **detector_kwargs: Any,
) -> nn.Module:
    """One factory for configs: any detector x any torchvision ResNet x FaPN or torchvision's FPN.

    ``build_detection_model(detector="maskrcnn", backbone="resnet50", neck="fapn")`` is
    :func:`maskrcnn_resnet50_fapn`; ``neck="fpn"`` is torchvision's ``maskrcnn_resnet50_fpn`` (the baseline,
    structurally detectron2's FPN: 1x1 laterals, nearest upsampling, 3x3 outputs on every level). RetinaNet's
    P6/P7 come from C5 with either neck (the authors', detectron2's and torchvision's ``_v2``).

    Args:
        detector: ``"fasterrcnn"``, ``"maskrcnn"``, ``"retinanet"``, ``"panoptic_fpn"`` or ``"pointrend_maskrcnn"``
            (Mask R-CNN with PointRend's mask head, :class:`~fapn.models.pointrend.PointRendMaskRCNN`).
        backbone: a torchvision ResNet name (``"resnet18"`` ... ``"resnet101"``).
        neck: ``"fapn"`` or ``"fpn"``.
        num_classes: classes including background.
        num_stuff_classes: stuff classes (``panoptic_fpn`` only).
        weights_backbone: ImageNet weights (enum, its name, or a ``.pth`` path), or ``None``.
        trainable_backbone_layers: 0 to 5, ``None`` for torchvision's default.
        fapn_kwargs: extra :class:`fapn.FaPN` arguments (``neck="fapn"`` only).
        panoptic_kwargs: extra :class:`~fapn.models.detection.PanopticFPN` arguments.
        frozen_batch_norm: ``None``: frozen exactly when ``weights_backbone`` is given (torchvision's rule).
        **detector_kwargs: passed to the torchvision detector (``min_size``, ``max_size``, ...).

    Example:
        >>> model = build_detection_model(detector="fasterrcnn", backbone="resnet18", num_classes=4)
        >>> type(model.backbone).__name__
        'BackboneWithFaPN'
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if detector == "panoptic_fpn" and num_stuff_classes < 1:
        raise ValueError("panoptic_fpn needs num_stuff_classes >= 1")
    body_and_neck = resnet_pyramid(
        backbone,
        neck=neck,
        weights_backbone=weights_backbone,
        trainable_backbone_layers=trainable_backbone_layers,
        frozen_batch_norm=frozen_batch_norm,
        levels="p3-p7" if detector == "retinanet" else "p2-p6",
        fapn_kwargs=fapn_kwargs,
    )
    if detector == "fasterrcnn":
        return FasterRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if detector == "maskrcnn":
        return MaskRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if detector == "retinanet":
        return RetinaNet(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if detector == "pointrend_maskrcnn":
        from fapn.models.pointrend import PointRendMaskRCNN  # fapn.models.pointrend imports this package

        return PointRendMaskRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs)
    return PanopticFPN(
        MaskRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs),
        num_stuff_classes,
        **(panoptic_kwargs or {}),
    )
