"""Semantic segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel and mean accuracy.

The confusion matrix has ``num_classes`` rows (ground truth) and ``num_classes + 1`` columns: the last column
counts predictions outside the class set (e.g. a Cityscapes label id that is not evaluated), which are wrong
for the ground-truth class (a false negative) but a false positive of no class -- the Cityscapes convention.
Ground-truth pixels equal to ``ignore_index`` are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fapn.runtime import all_reduce_sum

__all__ = ["ConfusionMatrix", "confusion_matrix", "scores_from_confusion", "format_table"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``[num_classes, num_classes + 1]`` int64 counts of (ground truth, prediction) pairs.

    Args:
        pred: predicted class indices, any shape.
        target: ground truth of the same shape; ``ignore_index`` pixels are skipped.
        num_classes: number of classes.
        ignore_index: ground-truth value to skip.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1, 5]), torch.tensor([0, 1, 0, 1]), 2)
        tensor([[1, 1, 0],
                [0, 1, 1]])
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(
            f"ground truth holds values outside 0..{num_classes - 1} and the ignore index {ignore_index}: "
            f"{sorted(set(target[(target < 0) | (target >= num_classes)].unique().tolist()))[:10]}"
        )
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, torch.full_like(pred, num_classes))
    counts = torch.bincount(target * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def scores_from_confusion(matrix: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores in percent from a confusion matrix (see the module docstring).

    Returns:
        ``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_iou": {name: iou or None}, "per_class_accuracy",
        "num_pixels"}`` (``num_pixels``: labelled pixels counted);
        a class that appears neither in the ground truth nor in the predictions has IoU ``None`` and is left out
        of the mean (as the Cityscapes evaluator does).
    """
    m = matrix.double()
    num_classes = m.shape[0]
    tp = m.diagonal()[:num_classes] if m.shape[1] > num_classes else m.diagonal()
    gt_total = m.sum(dim=1)
    pred_total = m[:, :num_classes].sum(dim=0)
    union = gt_total + pred_total - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    accuracy = torch.where(gt_total > 0, tp / gt_total.clamp(min=1), torch.full_like(tp, float("nan")))
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    total = gt_total.sum()

    def pct(x: Tensor) -> float | None:
        return None if torch.isnan(x) else float(x) * 100.0

    return {
        "mIoU": pct(torch.nanmean(iou)) if (~torch.isnan(iou)).any() else None,
        "pixel_accuracy": pct(tp.sum() / total) if total > 0 else None,
        "mean_accuracy": pct(torch.nanmean(accuracy)) if (~torch.isnan(accuracy)).any() else None,
        "per_class_iou": {name: pct(v) for name, v in zip(names, iou)},
        "per_class_accuracy": {name: pct(v) for name, v in zip(names, accuracy)},
        "num_pixels": int(total),
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (and over DDP ranks with :meth:`all_reduce`).

    Args:
        num_classes: number of classes.
        ignore_index: ground-truth value to skip.
        class_names: names for the per-class scores.

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
        >>> cm.compute()["mIoU"]
        25.0
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.matrix = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.matrix += confusion_matrix(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op outside ``torch.distributed``)."""
        self.matrix = all_reduce_sum(self.matrix)

    def compute(self) -> dict[str, Any]:
        return scores_from_confusion(self.matrix, self.class_names)


def format_table(scores: dict[str, Any], boundary: dict[str, Any] | None = None) -> str:
    """A per-class text table (IoU, accuracy and, when given, boundary IoU) followed by the means."""
    names = list(scores["per_class_iou"])
    width = max(12, *(len(n) for n in names))

    def cell(v: float | None) -> str:
        return f"{v:8.2f}" if v is not None else f"{'-':>8}"

    header = f"{'class':<{width}} {'IoU':>8} {'acc':>8}" + (f" {'bIoU':>8}" if boundary else "")
    lines = [header, "-" * len(header)]
    for name in names:
        line = f"{name:<{width}} {cell(scores['per_class_iou'][name])} {cell(scores['per_class_accuracy'][name])}"
        if boundary:
            line += f" {cell(boundary['per_class_iou'].get(name))}"
        lines.append(line)
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<{width}} {cell(scores['mIoU'])} {cell(scores['mean_accuracy'])}"
        + (f" {cell(boundary['mIoU'])}" if boundary else "")
    )
    lines.append(f"pixel accuracy {cell(scores['pixel_accuracy'])}")
    return "\n".join(lines)
