"""Semantic segmentation evaluation: whole images at full size, optional flip / multi-scale testing, mIoU,
per-class IoU, accuracies and the boundary mIoU, reduced over DDP ranks; predictions saved as PNGs in the
official submission format (Cityscapes: label ids, full resolution, one file per image named after it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from fapn.data.base import SegmentationDataset
from fapn.data.cityscapes import cityscapes_train_to_label_ids
from fapn.metrics import DEFAULT_BOUNDARY_WIDTH, BoundaryConfusionMatrix, ConfusionMatrix
from fapn.metrics.small_objects import small_object_recall_for
from fapn.runtime import autocast, model_dtype, prepare_inference, resolve_device

__all__ = ["predict_logits", "evaluate", "save_prediction", "prediction_file_name", "run_eval", "class_mismatch"]


@torch.no_grad()
def predict_logits(
    model: nn.Module, image: Tensor, flip: bool = False, scales: Sequence[float] = (1.0,), amp: bool = False
) -> Tensor:
    """Class probabilities ``[N, C, H, W]`` at the input size, averaged over scales (and flips).

    Args:
        model: maps ``[N, 3, h, w]`` to logits ``[N, C, h, w]``.
        image: normalised images ``[N, 3, H, W]`` (cast to the model's dtype here).
        flip: also predict the mirrored image.
        scales: resize factors (``(1.0,)``: the image as is).
        amp: run under autocast.
    """
    height, width = image.shape[-2:]
    total: Tensor | None = None
    for scale in scales:
        x = image
        if scale != 1.0:
            size = (max(32, round(height * scale)), max(32, round(width * scale)))
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        x = x.to(model_dtype(model))
        views = [x, x.flip(-1)] if flip else [x]
        for i, view in enumerate(views):
            with autocast(image.device, amp):
                logits = model(view)
            logits = logits.float()
            if i == 1:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
    assert total is not None
    return total / (len(scales) * (2 if flip else 1))


def prediction_file_name(dataset: SegmentationDataset, index: int) -> str:
    """File name of the saved prediction of sample ``index``: the image's name with ``.png``."""
    return f"{dataset.sample_name(index)}.png"


def save_prediction(prediction: np.ndarray, path: str | os.PathLike[str], dataset_name: str) -> None:
    """Write a ``[H, W]`` train-id prediction as an 8-bit PNG: Cityscapes label ids for ``cityscapes``
    (the official submission format), train ids otherwise."""
    values = cityscapes_train_to_label_ids(prediction) if dataset_name == "cityscapes" else prediction.astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    device: torch.device | str = "cpu",
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    save_predictions: str | os.PathLike[str] | None = None,
    amp: bool = False,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on every image of ``dataset`` (whose transforms normalise, at full size).

    Under DDP, rank ``r`` takes images ``r, r + W, ...`` and the confusion matrices are summed.

    Returns:
        scores in percent: ``mIoU``, ``pixel_accuracy``, ``mean_accuracy``, ``per_class_iou``,
        ``per_class_accuracy``, ``boundary`` (same keys, on the band within ``boundary_width`` pixels of label
        boundaries, plus ``width``), ``small_objects`` (the recall of ground-truth components of thing-like classes
        by size, :class:`fapn.metrics.small_objects.SmallObjectRecall`; ``None`` for a dataset without such classes
        or without scipy) and ``num_images``.

    Example:
        >>> from fapn.data import synthetic_streets, eval_transforms
        >>> from fapn.models import realtime_fapn
        >>> ds = synthetic_streets(split="val", size=(64, 64), num_images=2, transforms=eval_transforms())
        >>> scores = evaluate(realtime_fapn(num_classes=8).eval(), ds, progress=False)
        >>> 0 <= scores["mIoU"] <= 100
        True
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    names = dataset.info.class_names
    confusion = ConfusionMatrix(dataset.num_classes, dataset.ignore_index, names)
    boundary = BoundaryConfusionMatrix(dataset.num_classes, boundary_width, dataset.ignore_index, names)
    small = small_object_recall_for(names)
    indices = range(rank, len(dataset), world_size)
    for index in tqdm(indices, desc="eval", disable=not progress or rank != 0, leave=False):
        image, target = dataset[index]
        probs = predict_logits(model, image.unsqueeze(0).to(device), flip=flip, scales=scales, amp=amp)
        prediction = probs.argmax(dim=1)[0].cpu()
        target = torch.as_tensor(target).long()
        confusion.update(prediction, target)
        boundary.update(prediction, target)
        if small is not None:
            small.update(prediction, target)
        if save_predictions is not None:
            save_prediction(
                prediction.numpy(), Path(save_predictions) / prediction_file_name(dataset, index), dataset.info.name
            )
    confusion.all_reduce()
    boundary.all_reduce()
    if small is not None:
        small.all_reduce()
    model.train(was_training)
    scores = confusion.compute()
    scores["boundary"] = {**boundary.compute(), "width": boundary_width}
    scores["small_objects"] = None if small is None else small.compute()
    scores["num_images"] = len(dataset)
    return scores


def class_mismatch(
    checkpoint: dict[str, Any], dataset: SegmentationDataset, weights: str | os.PathLike[str]
) -> str | None:
    """A warning when the checkpoint's classes are not the dataset's (count or names), else ``None``: the
    scores are then computed all the same (predictions outside the dataset's classes count as wrong), but
    they compare different things."""
    stored = checkpoint.get("dataset") or {}
    names = list(stored.get("class_names") or [])
    count = (checkpoint.get("model_config") or {}).get("num_classes") or len(names) or None
    if count is not None and count != dataset.num_classes:
        return (
            f"checkpoint {weights} predicts {count} classes but {dataset.info.name} has {dataset.num_classes}: "
            "scores compare different class sets (evaluate with the recipe the model was trained with)"
        )
    if names and len(names) == dataset.num_classes and names != list(dataset.info.class_names):
        differing = [f"{i}: {a} vs {b}" for i, (a, b) in enumerate(zip(names, dataset.info.class_names)) if a != b]
        return (
            f"checkpoint {weights} names its classes differently from {dataset.info.name} ({', '.join(differing[:3])})"
        )
    return None


def run_eval(
    config_path: str | Mapping[str, Any],
    overrides: list[str],
    weights: str,
    split: str | None = None,
    save_predictions: str | None = None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
    device: str = "auto",
    *,
    threads: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``fapn eval`` for semantic segmentation: the scores of :func:`evaluate` for ``weights`` on the recipe's
    validation split, plus ``weights``, ``precision``, ``split`` and, when the checkpoint names its classes
    differently from the dataset, ``warning`` (also passed to ``on_warning`` at once, before the evaluation).
    The command prints and writes them.

    Args:
        config_path: a recipe (shipped name or YAML file), or a recipe as a dict (the one a checkpoint stores,
            see :func:`fapn.engine.run_dir.saved_recipe`); ``overrides`` apply to either.
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA), see :func:`fapn.runtime.prepare_inference`.
        threads: torch CPU threads (``None``: the recipe's ``train.threads``, else torch's default, one per core).
        progress: a tqdm bar (off: no carriage returns in logs).
    """
    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fapn.config import config_from_dict, load_config
    from fapn.data.build import build_dataset
    from fapn.data.transforms import eval_transforms
    from fapn.engine.semseg.config import SegmentationConfig
    from fapn.runtime import set_threads

    if isinstance(config_path, Mapping):
        cfg = config_from_dict(config_path, SegmentationConfig, overrides)
    else:
        cfg = load_config(config_path, SegmentationConfig, overrides)
    set_threads(threads if threads is not None else cfg.train.threads)
    torch_device = resolve_device(device)
    checkpoint = load_checkpoint(weights, map_location=torch_device)
    model = prepare_inference(build_model_from_checkpoint(checkpoint), torch_device, precision)
    stored = checkpoint.get("dataset") or {}
    mean, std = stored.get("mean", cfg.data.mean), stored.get("std", cfg.data.std)
    dataset = build_dataset(
        cfg.data.dataset,
        cfg.data.root,
        split or cfg.data.val_split,
        eval_transforms(mean, std),
        **{**cfg.data.options, **cfg.data.val_options},
    )
    mismatch = class_mismatch(checkpoint, dataset, weights)
    if mismatch is not None and on_warning is not None:
        on_warning(mismatch)
    scores = evaluate(
        model,
        dataset,
        torch_device,
        flip=flip,
        scales=scales or cfg.eval.scales,
        boundary_width=cfg.eval.boundary_width,
        save_predictions=save_predictions,
        progress=progress,
    )
    scores["weights"] = str(weights)
    scores["precision"] = precision
    scores["split"] = split or cfg.data.val_split
    if mismatch is not None:
        scores["warning"] = mismatch
    return scores
