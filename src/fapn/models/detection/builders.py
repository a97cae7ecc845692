"""torchvision's detection builders with FaPN instead of FPN: switching is one word.

``torchvision.models.detection.maskrcnn_resnet50_fpn(...)`` -> ``fapn.models.detection.maskrcnn_resnet50_fapn(...)``
with the same keyword arguments. There are no COCO weights for these models in torchvision's hub, so
``weights`` is a path to a state dict (e.g. one written by ``fapn train`` or ``fapn convert``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum, resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _validate_trainable_layers
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from fapn.models.backbones import load_resnet_weights
from fapn.models.detection.backbone import BackboneWithFaPN, resnet_fapn_extractor

__all__ = [
    "fasterrcnn_resnet50_fapn",
    "fasterrcnn_resnet101_fapn",
    "maskrcnn_resnet50_fapn",
    "maskrcnn_resnet101_fapn",
    "retinanet_resnet50_fapn",
    "retinanet_resnet101_fapn",
    "fapn_backbone",
    "build_detection_model",
    "DETECTION_BUILDERS",
    "DETECTORS",
    "NECKS",
]

WeightsLike = str | os.PathLike[str] | None
BackboneWeightsLike = WeightsEnum | str | os.PathLike[str] | None


def fapn_backbone(
    depth: int | str,
    weights_backbone: BackboneWeightsLike,
    trainable_backbone_layers: int | None,
    is_trained: bool,
    *,
    retinanet: bool = False,
    fapn_kwargs: dict[str, Any] | None = None,
    frozen_batch_norm: bool | None = None,
) -> BackboneWithFaPN:
    """The ResNet + FaPN backbone every builder here uses, with torchvision's freezing rules.

    Frozen batch norm and 3 trainable stages when weights are given (as torchvision and detectron2's
    ``FREEZE_AT: 2``); trainable batch norm and all stages when training from scratch.

    Args:
        depth: 18, 34, 50, 101 or a torchvision ResNet name.
        weights_backbone: ImageNet weights (enum, enum name, or a local ``.pth``), or ``None``.
        trainable_backbone_layers: 0 to 5, or ``None`` for the default.
        is_trained: whether any weights are loaded (changes the defaults, as in torchvision).
        retinanet: P3-P7 (``LastLevelP6P7`` on P5) instead of P2-P6.
        fapn_kwargs: extra arguments of :class:`fapn.FaPN` (ablations).
        frozen_batch_norm: ``FrozenBatchNorm2d`` or ``BatchNorm2d``; ``None`` follows ``is_trained`` (torchvision).
            Set it to rebuild a model trained from ImageNet weights without loading them again.
    """
    name = depth if isinstance(depth, str) else f"resnet{depth}"
    trainable = _validate_trainable_layers(is_trained, trainable_backbone_layers, 5, 3)
    frozen = is_trained if frozen_batch_norm is None else frozen_batch_norm
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    body = resnet.__dict__[name](weights=None, norm_layer=norm_layer)
    load_resnet_weights(body, name, weights_backbone)
    kwargs = dict(fapn_kwargs or {})
    if retinanet:
        return resnet_fapn_extractor(
            body, trainable, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256), **kwargs
        )
    return resnet_fapn_extractor(body, trainable, **kwargs)


def _load_weights(model: nn.Module, weights: WeightsLike) -> None:
    if weights is None:
        return
    if isinstance(weights, WeightsEnum):
        raise TypeError("torchvision has no FaPN weights; pass the path of a state dict or a fapn checkpoint")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model.load_state_dict(state)


def _build(
    detector: type[nn.Module],
    depth: int,
    *,
    weights: WeightsLike,
    num_classes: int | None,
    weights_backbone: BackboneWeightsLike,
    trainable_backbone_layers: int | None,
    fapn_kwargs: dict[str, Any] | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    if weights is not None:
        weights_backbone = None  # the model weights contain the backbone
    if num_classes is None:
        num_classes = 91
    is_trained = weights is not None or weights_backbone is not None
    backbone = fapn_backbone(
        depth,
        weights_backbone,
        trainable_backbone_layers,
        is_trained,
        retinanet=detector is RetinaNet,
        fapn_kwargs=fapn_kwargs,
    )
    model = detector(backbone, num_classes=num_classes, **kwargs)
    _load_weights(model, weights)
    return model


def fasterrcnn_resnet50_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
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
        >>> model = fasterrcnn_resnet50_fapn(num_classes=3, min_size=128, max_size=128).eval()
        >>> sorted(model([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'scores']
    """
    del progress
    return _build(FasterRCNN, 50, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


def fasterrcnn_resnet101_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN, ResNet-101 + FaPN; arguments as :func:`fasterrcnn_resnet50_fapn`."""
    del progress
    return _build(FasterRCNN, 101, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


def maskrcnn_resnet50_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN, ResNet-50 + FaPN: ``torchvision.models.detection.maskrcnn_resnet50_fpn`` with FaPN.

    Args: as :func:`fasterrcnn_resnet50_fapn`; ``**kwargs`` go to ``MaskRCNN``.

    Example:
        >>> model = maskrcnn_resnet50_fapn(num_classes=3, min_size=128, max_size=128).eval()
        >>> sorted(model([torch.rand(3, 128, 128)])[0])
        ['boxes', 'labels', 'masks', 'scores']
    """
    del progress
    return _build(MaskRCNN, 50, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


def maskrcnn_resnet101_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN, ResNet-101 + FaPN; arguments as :func:`maskrcnn_resnet50_fapn`."""
    del progress
    return _build(MaskRCNN, 101, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


def retinanet_resnet50_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """RetinaNet, ResNet-50 + FaPN on C3-C5 with P6/P7 from P5 (``LastLevelP6P7``), as ``retinanet_resnet50_fpn``.

    Args: as :func:`fasterrcnn_resnet50_fapn`; ``**kwargs`` go to ``RetinaNet``.
    """
    del progress
    return _build(RetinaNet, 50, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


def retinanet_resnet101_fapn(
    *,
    weights: WeightsLike = None,
    progress: bool = True,
    num_classes: int | None = None,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """RetinaNet, ResNet-101 + FaPN; arguments as :func:`retinanet_resnet50_fapn`."""
    del progress
    return _build(RetinaNet, 101, weights=weights, num_classes=num_classes, weights_backbone=weights_backbone,
                  trainable_backbone_layers=trainable_backbone_layers, fapn_kwargs=fapn_kwargs, kwargs=kwargs)


DETECTION_BUILDERS = {
    "fasterrcnn_resnet50_fapn": fasterrcnn_resnet50_fapn,
    "fasterrcnn_resnet101_fapn": fasterrcnn_resnet101_fapn,
    "maskrcnn_resnet50_fapn": maskrcnn_resnet50_fapn,
    "maskrcnn_resnet101_fapn": maskrcnn_resnet101_fapn,
    "retinanet_resnet50_fapn": retinanet_resnet50_fapn,
    "retinanet_resnet101_fapn": retinanet_resnet101_fapn,
}


DETECTORS = ("fasterrcnn", "maskrcnn", "retinanet", "panoptic_fpn")
NECKS = ("fapn", "fpn")


def build_detection_model(
    *,
    detector: str = "maskrcnn",
    backbone: str = "resnet50",
    neck: str = "fapn",
    num_classes: int = 91,
    num_stuff_classes: int = 0,
    weights_backbone: BackboneWeightsLike = None,
    trainable_backbone_layers: int | None = None,
    fapn_kwargs: dict[str, Any] | None = None,
    panoptic_kwargs: dict[str, Any] | None = None,
    frozen_batch_norm: bool | None = None,
    **detector_kwargs: Any,
) -> nn.Module:
    """One factory for configs: any detector x any torchvision ResNet x FaPN or torchvision's FPN.

    ``build_detection_model(detector="maskrcnn", backbone="resnet50", neck="fapn")`` is
    :func:`maskrcnn_resnet50_fapn`; ``neck="fpn"`` is torchvision's ``maskrcnn_resnet50_fpn`` (the baseline,
    structurally detectron2's FPN: 1x1 laterals, nearest upsampling, 3x3 outputs on every level).

    Args:
        detector: ``"fasterrcnn"``, ``"maskrcnn"``, ``"retinanet"`` or ``"panoptic_fpn"``.
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
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    from fapn.models.detection.panoptic_fpn import PanopticFPN

    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
    if backbone not in resnet.__dict__ or not backbone.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(f"backbone must be a torchvision ResNet name such as 'resnet50', got {backbone!r}")
    is_trained = weights_backbone is not None
    frozen = is_trained if frozen_batch_norm is None else frozen_batch_norm
    retinanet = detector == "retinanet"
    if neck == "fapn":
        body_and_neck: nn.Module = fapn_backbone(backbone, weights_backbone, trainable_backbone_layers, is_trained,
                                                 retinanet=retinanet, fapn_kwargs=fapn_kwargs,
                                                 frozen_batch_norm=frozen)
    else:
        if fapn_kwargs:
            raise ValueError("fapn_kwargs only apply to neck='fapn'")
        trainable = _validate_trainable_layers(is_trained, trainable_backbone_layers, 5, 3)
        norm_layer = misc_nn_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
        body = resnet.__dict__[backbone](weights=None, norm_layer=norm_layer)
        load_resnet_weights(body, backbone, weights_backbone)
        if retinanet:
            body_and_neck = _resnet_fpn_extractor(body, trainable, returned_layers=[2, 3, 4],
                                                  extra_blocks=LastLevelP6P7(256, 256))
        else:
            body_and_neck = _resnet_fpn_extractor(body, trainable)
    if detector == "fasterrcnn":
        return FasterRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if detector == "maskrcnn":
        return MaskRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if detector == "retinanet":
        return RetinaNet(body_and_neck, num_classes=num_classes, **detector_kwargs)
    if num_stuff_classes < 1:
        raise ValueError("panoptic_fpn needs num_stuff_classes >= 1")
    return PanopticFPN(MaskRCNN(body_and_neck, num_classes=num_classes, **detector_kwargs), num_stuff_classes,
                       **(panoptic_kwargs or {}))
