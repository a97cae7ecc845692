"""The detector a detection recipe describes: :func:`fapn.models.detection.build_detection_model`'s arguments
from the recipe, sized for the dataset."""

from __future__ import annotations

from typing import Any

from torch import nn

from fapn.engine.detection.config import DetectionConfig

__all__ = ["model_kwargs", "build_model"]


def model_kwargs(cfg: DetectionConfig, num_classes: int, num_stuff_classes: int = 0) -> dict[str, Any]:
    """Keyword arguments of :func:`~fapn.models.detection.build_detection_model` for this config."""
    m = cfg.model
    detector = m.detector
    if cfg.task == "panoptic" and detector != "panoptic_fpn":
        raise ValueError(f"task panoptic needs model.detector=panoptic_fpn, got {detector!r}")
    if cfg.task == "instance" and detector not in ("maskrcnn", "pointrend_maskrcnn"):
        raise ValueError(f"task instance needs model.detector=maskrcnn or pointrend_maskrcnn, got {detector!r}")
    kwargs: dict[str, Any] = {
        "detector": detector,
        "backbone": m.backbone,
        "neck": m.neck,
        "num_classes": num_classes,
        "weights_backbone": m.weights_backbone,
        "trainable_backbone_layers": m.trainable_backbone_layers,
        # recorded so a checkpoint rebuilds with the same norm layers without loading ImageNet weights again
        "frozen_batch_norm": m.weights_backbone is not None,
        "min_size": tuple(m.min_size),
        "max_size": m.max_size,
        **m.options,
    }
    if m.fapn:
        kwargs["fapn_kwargs"] = dict(m.fapn)
    if detector == "panoptic_fpn":
        kwargs["num_stuff_classes"] = num_stuff_classes
        kwargs["panoptic_kwargs"] = dict(m.panoptic)
    return kwargs


def build_model(cfg: DetectionConfig, dataset: Any, with_weights: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The model for ``cfg`` sized for ``dataset``; returns ``(model, builder kwargs)``."""
    from fapn.models.detection import build_detection_model

    kwargs = model_kwargs(cfg, dataset.num_classes, getattr(dataset, "num_stuff_classes", 0))
    if not with_weights:
        kwargs["weights_backbone"] = None
    return build_detection_model(**kwargs), kwargs
