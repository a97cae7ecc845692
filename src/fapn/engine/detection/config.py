"""The detection / instance / panoptic recipe as dataclasses (loaded by :func:`fapn.config.load_config`).

Defaults are detectron2's 1x schedule as the authors ran it: batch 16, SGD momentum 0.9, lr 0.02, weight decay
1e-4, 90K iterations with x0.1 at 60K and 80K, linear warmup over 1000 iterations from 0.001, shorter side
640-800 (step 32) in training and 800 in testing (longer side at most 1333), frozen BN from ImageNet weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DetectionConfig",
    "DetectionModelConfig",
    "DetectionDataConfig",
    "DetectionOptimConfig",
    "DetectionTrainConfig",
    "DetectionEvalConfig",
    "DETECTION_TASKS",
    "load_detection_config",
]

DETECTION_TASKS = ("detection", "instance", "panoptic")


@dataclass
class DetectionModelConfig:
    """Which model: arguments of :func:`fapn.models.detection.build_detection_model`.

    Attributes:
        detector: ``fasterrcnn``, ``maskrcnn``, ``retinanet``, ``panoptic_fpn`` or ``pointrend_maskrcnn``.
        backbone: torchvision ResNet name.
        neck: ``fapn`` or ``fpn`` (torchvision's, the baseline).
        weights_backbone: ImageNet weights: torchvision enum name (``IMAGENET1K_V1``) or a ``.pth`` path.
        trainable_backbone_layers: 0-5, ``null`` for torchvision's default (3 with weights).
        min_size: training shorter sides, one drawn per batch (detectron2's multi-scale); the last one is the
            test size.
        max_size: longest side.
        fapn: extra :class:`fapn.FaPN` arguments (ablations).
        panoptic: extra :class:`~fapn.models.detection.PanopticFPN` arguments (thresholds, loss weight).
        options: extra detector arguments (``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``, ...).
    """

    detector: Literal["fasterrcnn", "maskrcnn", "retinanet", "panoptic_fpn", "pointrend_maskrcnn"] = "maskrcnn"
    backbone: str = "resnet50"
    neck: Literal["fapn", "fpn"] = "fapn"
    weights_backbone: str | None = "IMAGENET1K_V1"
    trainable_backbone_layers: int | None = None
    min_size: list[int] = field(default_factory=lambda: list(range(640, 801, 32)))
    max_size: int = 1333
    fapn: dict = field(default_factory=dict)
    panoptic: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@dataclass
class DetectionDataConfig:
    """Where the data is.

    Attributes:
        format: ``coco`` (instances JSON), ``coco_panoptic`` (PNG + JSON) or ``synthetic`` (generated into
            ``root`` on first use, with :func:`fapn.data.synthetic_coco.make_synthetic_coco`).
        root: data root; relative paths below are under it. ``null``: ``$FAPN_DATA/coco``.
        train_images, val_images: image folders.
        train_annotations, val_annotations: instances JSON (AP is computed when ``val_annotations`` is set).
        train_panoptic_json, val_panoptic_json, train_panoptic_root, val_panoptic_root: panoptic JSON/PNGs.
        synthetic: ``make_synthetic_coco`` arguments plus ``num_train``/``num_val``.
        num_workers: loader processes (at most one per usable core is started).
    """

    format: Literal["coco", "coco_panoptic", "synthetic"] = "coco"
    root: str | None = None
    train_images: str = "train2017"
    val_images: str = "val2017"
    train_annotations: str | None = "annotations/instances_train2017.json"
    val_annotations: str | None = "annotations/instances_val2017.json"
    train_panoptic_json: str | None = None
    val_panoptic_json: str | None = None
    train_panoptic_root: str | None = None
    val_panoptic_root: str | None = None
    synthetic: dict = field(default_factory=dict)
    num_workers: int = 2


@dataclass
class DetectionOptimConfig:
    """SGD with a step schedule and linear warmup (detectron2's ``WarmupMultiStepLR``)."""

    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: float | None = None


@dataclass
class DetectionTrainConfig:
    """The loop. ``time_budget_s`` stops training early (used by the CPU benchmark); ``threads``: torch CPU
    threads (null: torch's default, one per core); ``device``: ``auto``, ``cpu`` or ``cuda``."""

    batch_size: int = 16
    iterations: int = 90000
    eval_period: int = 0
    checkpoint_period: int = 5000
    log_period: int = 20
    seed: int = 0
    threads: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "runs/detection"
    time_budget_s: float | None = None


@dataclass
class DetectionEvalConfig:
    """Evaluation. ``max_images`` limits the images (quick checks)."""

    batch_size: int = 1
    max_images: int | None = None
    mask_threshold: float = 0.5


@dataclass
class DetectionConfig:
    """A whole detection / instance / panoptic recipe.

    Example:
        >>> from fapn.config import load_config
        >>> cfg = load_config("detection/mask_rcnn_R_50_FaPN_1x", DetectionConfig, ["train.iterations=10"])
        >>> cfg.task, cfg.optim.lr, cfg.train.iterations
        ('instance', 0.02, 10)
    """

    task: Literal["detection", "instance", "panoptic"] = "instance"
    name: str = "detection"
    model: DetectionModelConfig = field(default_factory=DetectionModelConfig)
    data: DetectionDataConfig = field(default_factory=DetectionDataConfig)
    optim: DetectionOptimConfig = field(default_factory=DetectionOptimConfig)
    train: DetectionTrainConfig = field(default_factory=DetectionTrainConfig)
    eval: DetectionEvalConfig = field(default_factory=DetectionEvalConfig)


def load_detection_config(path_or_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DetectionConfig:
    """A :class:`DetectionConfig` from a YAML path or shipped name (``detection/mask_rcnn_R_50_FaPN_1x``)."""
    from fapn.config import load_config

    return load_config(path_or_name, DetectionConfig, overrides)
