"""Score saved prediction PNGs against a dataset's ground truth, without the model.

Cityscapes predictions are in the official submission format: label ids (not train ids), full resolution,
one PNG per image whose name starts with the image's ``{city}_{sequence}_{frame}``. Label ids of classes not
evaluated count as wrong predictions (a false negative of the true class), as in ``cityscapesscripts``.
Other datasets: one index PNG of train ids per image, named after the image: ``NAME.png`` (what ``fapn eval
--save-predictions`` writes) or ``NAME_label.png`` (what ``fapn predict`` writes, beside its colour pictures).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fapn.data.base import SampleError, read_label
from fapn.data.build import build_dataset
from fapn.data.cityscapes import CITYSCAPES_LABEL_TO_TRAIN
from fapn.metrics import DEFAULT_BOUNDARY_WIDTH, BoundaryConfusionMatrix, ConfusionMatrix, class_count_warning
from fapn.metrics.small_objects import small_object_recall_for

__all__ = ["score_predictions", "PREDICT_SUFFIXES"]

PREDICT_SUFFIXES = ("_label", "_color", "_overlay")
"""The endings of the file names ``fapn predict`` writes (``NAME_label.png`` holds the class indices)."""


def _cityscapes_key(name: str) -> str:
    return "_".join(name.split("_")[:3])


def _cityscapes_evaluator() -> Any:
    try:
        from fapn.metrics.cityscapes import CityscapesEvaluator

        return CityscapesEvaluator()
    except ImportError:  # cityscapesscripts (the eval extra) not installed: only the mIoU table
        return None


def score_predictions(
    dataset_name: str,
    gt_root: str | os.PathLike[str] | None,
    split: str,
    pred_dir: str | os.PathLike[str],
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Confusion-matrix scores (percent) of the PNGs in ``pred_dir`` against split ``split`` of the dataset.

    Returns:
        ``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_iou", "per_class_accuracy", "boundary",
        "num_images", "class_count_warning" (see :func:`fapn.metrics.class_count_warning`, or None)}``; for
        Cityscapes also ``"cityscapes"``: IoU and iIoU for classes and categories as the official evaluator
        computes them (:class:`fapn.metrics.cityscapes.CityscapesEvaluator`; ``None`` without cityscapesscripts).

    Raises:
        FileNotFoundError: a ground-truth image without its prediction (named).
        ValueError: a prediction of the wrong size or with values outside the label set (named).
    """
    from tqdm.auto import tqdm

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    dataset = build_dataset(dataset_name, gt_root, split, None, **options)
    is_cityscapes = dataset.info.name == "cityscapes"
    predictions: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        if is_cityscapes and path.stem.endswith(PREDICT_SUFFIXES):
            raise ValueError(
                f"{path} is named as 'fapn predict' names its pictures (train ids, colours); a Cityscapes "
                "submission holds label ids: write it with 'fapn eval --save-predictions DIR'"
            )
        key = _cityscapes_key(path.stem) if is_cityscapes else path.stem
        if key in predictions:
            raise ValueError(f"two predictions for the same image: {predictions[key]} and {path}")
        predictions[key] = path
    lut = np.full(256, -1, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    names = dataset.info.class_names
    confusion = ConfusionMatrix(dataset.num_classes, dataset.ignore_index, names)
    boundary = BoundaryConfusionMatrix(dataset.num_classes, boundary_width, dataset.ignore_index, names)
    cityscapes = _cityscapes_evaluator() if is_cityscapes else None
    small = small_object_recall_for(names)
    for index in tqdm(range(len(dataset)), desc="score", disable=not progress):
        name = dataset.sample_name(index)
        keys = [_cityscapes_key(name)] if is_cityscapes else [name, f"{name}_label"]
        found = [predictions[key] for key in keys if key in predictions]
        if not found:
            raise FileNotFoundError(
                f"no prediction for {name} in {pred_dir}: expected "
                + (
                    f"a PNG named {keys[0]}*.png (label ids)"
                    if is_cityscapes
                    else f"{name}.png or {name}_label.png (class indices)"
                )
            )
        if len(found) > 1:
            raise ValueError(f"two predictions for {name}: {found[0]} and {found[1]}; keep one")
        pred_path = found[0]
        try:
            raw = read_label(pred_path).astype(np.int64)
        except SampleError as err:
            raise ValueError(str(err)) from None
        target = dataset.load_label(index)
        if raw.shape != target.shape:
            raise ValueError(
                f"prediction {pred_path} is {raw.shape[1]}x{raw.shape[0]} but the ground truth is "
                f"{target.shape[1]}x{target.shape[0]} (width x height): predictions must be at full resolution"
            )
        if is_cityscapes:
            if raw.max() >= 34 or raw.min() < 0:
                raise ValueError(
                    f"prediction {pred_path} holds value {raw.max()}, not a Cityscapes label id (0..33): "
                    "submissions use label ids, see cityscapesscripts.helpers.labels"
                )
            pred = lut[raw]
        else:
            pred = raw
            bad = (pred >= dataset.num_classes) & (pred != dataset.ignore_index)
            if bad.any():
                raise ValueError(
                    f"prediction {pred_path} holds value(s) {np.unique(pred[bad]).tolist()[:10]}; expected class "
                    f"indices 0..{dataset.num_classes - 1}"
                )
        pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
        confusion.update(pred_t, target_t)
        boundary.update(pred_t, target_t)
        if small is not None:
            small.update(pred, target)
        if cityscapes is not None:  # label-id space, with the instance ids beside the labels when present
            cityscapes.update_files(pred_path, dataset.samples[index][1])
    scores = confusion.compute()
    if is_cityscapes:
        scores["cityscapes"] = None if cityscapes is None else cityscapes.compute()
    scores["boundary"] = {**boundary.compute(), "width": boundary_width}
    scores["small_objects"] = None if small is None else small.compute()
    scores["num_images"] = len(dataset)
    scores["class_count_warning"] = class_count_warning(confusion.matrix, names)
    return scores
