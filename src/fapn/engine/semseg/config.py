"""The semantic segmentation recipe as dataclasses (filled from the YAML files under ``fapn/configs/semseg``).

Example:
    >>> from fapn.config import load_config
    >>> cfg = load_config("semseg/cityscapes_r18_fapn", SegmentationConfig)
    >>> cfg.data.crop_size, cfg.train.batch_size, cfg.train.iterations, cfg.optim.lr
    ([768, 1536], 16, 40000, 0.01)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from fapn.data.base import IMAGENET_MEAN, IMAGENET_STD
from fapn.metrics.boundary import DEFAULT_BOUNDARY_WIDTH

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "SegmentationConfig",
    "PAPER_SCALES",
    "Neck",
]

PAPER_SCALES = [0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
"""Random scale set of the supplementary's recipe."""

Neck = Literal["fpn", "fpn+fam", "fpn+fam+fsm", "fapn"]
"""The necks a recipe names: ``fpn`` and ``fapn``, and for ``realtime_fapn`` also Table 1's necks between the two
(``fpn+fam``: FPN with FAM, no FSM; ``fpn+fam+fsm``: sum fusion), so the four rows of the ablation are one key."""


@dataclass
class ModelConfig:
    """Which segmentation model (its builder's arguments) plus how batch norm is trained.

    The engine calls the builder registered as ``name`` (:func:`fapn.models.get_model_builder`) with
    ``num_classes``, ``weights_backbone``, and ``backbone`` / ``neck`` / ``ignore_index`` where its signature
    has them, plus ``options``.

    The key ``variant`` of earlier releases is read as ``neck`` (with a ``FutureWarning``), in YAML files,
    ``--set`` overrides and the recipes saved in checkpoints.

    Args:
        name: a registry name (``fapn.models.list_models(task="semseg")``): ``realtime_fapn`` (the
            supplementary's real-time network), ``semantic_fpn`` (detectron2's semantic FPN head on a
            ResNet-50/101 + FaPN neck, the paper's Cityscapes setting; ``backbone`` picks the ResNet), ...
        backbone: ``resnet18`` or ``resnet34`` (``realtime_fapn``); ``resnet50`` or ``resnet101``
            (``semantic_fpn``).
        neck: ``fapn`` or ``fpn`` for every factory (``fapn.models.list_models(kind="factory")``);
            ``realtime_fapn`` also takes ``fpn+fam`` and ``fpn+fam+fsm`` (Table 1's rows, one key). A fixed
            architecture (``maskformer_fpn``, ...) has its neck in its name and takes no other.
        weights_backbone: ImageNet weights (torchvision name such as ``DEFAULT`` or a ``.pth``), null for none.
        frozen_bn: keep batch-norm statistics and affine parameters fixed (eval mode, no gradient).
        sync_bn: synchronise batch-norm statistics across processes under DDP.
        options: more keyword arguments of the builder (e.g. ``{channels: 96}``); stored in the checkpoint.
    """

    renamed_keys: ClassVar[dict[str, str]] = {"variant": "neck"}

    name: str = "realtime_fapn"
    backbone: str = "resnet18"
    neck: Neck = "fapn"
    weights_backbone: str | None = None
    frozen_bn: bool = False
    sync_bn: bool = False
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which dataset, where, and the training augmentation.

    Args:
        dataset: ``cityscapes``, ``coco_stuff``, ``ade20k``, ``camvid``, ``folder`` or ``synthetic``.
        root: dataset folder; null means ``$FAPN_DATA/<default folder>`` (e.g. ``camvid``).
        train_split, val_split: split names in the dataset's own layout.
        crop_size: training crop ``[height, width]``; padded with the ignore label when the image is smaller.
        scales: random scale factors (the paper's set by default).
        hflip: random horizontal flip.
        mean, std: normalisation (ImageNet statistics, on 0..1 images).
        num_workers: data loader processes per training process (at most one per usable core is started).
        options: extra keyword arguments of the dataset (e.g. ``classes_file`` for ``folder``, ``size`` and
            ``num_images`` for ``synthetic``).
        val_options: options that differ for the validation split (merged over ``options``).
        short_edges: detectron2's ``MIN_SIZE_TRAIN`` with ``"choice"`` sampling: resize the shorter side to one of
            these (instead of ``scales``), the longer side to at most ``max_size``.
        max_size: detectron2's ``MAX_SIZE_TRAIN`` (with ``short_edges``).
        single_category_max_area: redraw the crop (up to 10 times) while one category covers this share of it or
            more (detectron2's ``CROP.SINGLE_CATEGORY_MAX_AREA``; 1.0: off).
        color_aug_ssd: SSD's photometric distortion (detectron2's ``COLOR_AUG_SSD``).
        skip_unreadable: read every image and label once at start-up and train without the ones that cannot be
            read (listed in ``skipped_files.txt`` of the run folder); off: a fast header check of every file at
            start-up, and any bad file stops the run with its name.
    """

    dataset: str = "camvid"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scales: list[float] = field(default_factory=lambda: list(PAPER_SCALES))
    hflip: bool = True
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 2
    options: dict = field(default_factory=dict)
    val_options: dict = field(default_factory=dict)
    short_edges: list[int] = field(default_factory=list)
    max_size: int | None = None
    single_category_max_area: float = 1.0
    color_aug_ssd: bool = False
    skip_unreadable: bool = False


@dataclass
class OptimConfig:
    """SGD with a poly or multi-step schedule and optional linear warmup.

    Args:
        lr: initial learning rate.
        momentum, weight_decay: SGD's.
        schedule: ``poly`` (``lr * (1 - it / max_it) ** power``) or ``multistep`` (``* gamma`` at milestones).
        power: poly exponent.
        milestones, gamma: multi-step schedule.
        warmup_iters, warmup_factor: linear warmup from ``lr * warmup_factor`` over the first iterations.
        class_weights: optional per-class loss weights (e.g. CamVid's median-frequency weights).
        loss: ``ce`` (cross-entropy over every labelled pixel) or ``ohem`` (over the hard pixels only, see
            :func:`fapn.engine.semseg.loss.ohem_targets`).
        ohem_thresh, ohem_min_kept: OHEM's probability threshold and the pixels it keeps at least per batch.
        name: ``sgd`` or ``adamw`` (MaskFormer's recipes; see :func:`fapn.engine.optimizer.build_optimizer`).
        backbone_lr_factor: learning-rate multiplier of the backbone's parameters (MaskFormer: 0.1).
        weight_decay_norm: weight decay of normalisation layers and embeddings; null: ``weight_decay``.
        clip_grad_norm: clip the gradient norm of the whole model to this before each step; 0: off.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["poly", "multistep"] = "poly"
    power: float = 0.9
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    class_weights: list[float] | None = None
    loss: Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    name: Literal["sgd", "adamw"] = "sgd"
    backbone_lr_factor: float = 1.0
    weight_decay_norm: float | None = None
    clip_grad_norm: float = 0.0


@dataclass
class TrainConfig:
    """Length and bookkeeping of a run.

    Args:
        batch_size: global batch (split evenly over DDP processes).
        iterations: optimiser steps.
        eval_period: validate every this many iterations (0: only at the end).
        checkpoint_period: write ``last.pt`` every this many iterations (and at the end).
        log_period: JSONL / TensorBoard scalars every this many iterations.
        amp: mixed precision (bf16 on CPU, fp16 on CUDA; the deformable conv computes in float32).
        seed: seeds initialisation, data order and augmentation.
        threads: torch CPU threads per process (null: torch's default, one per core; on a machine busy with other
            work 1 is often much faster, which the library does not guess). ``fapn train --threads`` overrides it.
        device: ``auto`` (a CUDA GPU when torch sees one), ``cpu`` or ``cuda`` (under ``torchrun`` each process
            takes GPU ``LOCAL_RANK``; pick GPUs with ``CUDA_VISIBLE_DEVICES``).
        output_dir: where checkpoints and logs go.
    """

    batch_size: int = 16
    iterations: int = 40000
    eval_period: int = 4000
    checkpoint_period: int = 1000
    log_period: int = 20
    amp: bool = False
    seed: int = 0
    threads: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "runs/semseg"


@dataclass
class EvalConfig:
    """Evaluation on whole images at full size.

    Args:
        flip: add the horizontally flipped prediction (test-time augmentation, off in the paper).
        scales: multi-scale testing factors (``[1.0]``: none).
        boundary_width: pixels either side of a label boundary counted by the boundary (trimap) mIoU.
    """

    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH


@dataclass
class SegmentationConfig:
    """A complete semantic segmentation recipe."""

    task: Literal["semseg"] = "semseg"
    name: str = "semseg"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
