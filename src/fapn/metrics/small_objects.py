"""Object sizes as COCO buckets them, and the small-object recall of semantic segmentation.

COCO's area buckets (``pycocotools``: small up to 32^2 pixels, medium up to 96^2, large above) are the one size
rule of the library: box and mask AP by size come from pycocotools itself (:mod:`fapn.metrics.coco`), panoptic
quality by size (:mod:`fapn.metrics.panoptic`) and the semantic recall below use :func:`size_bucket`. Here the
buckets are half-open, ``[0, 32^2)``, ``[32^2, 96^2)``, ``[96^2, inf)``, so that each object falls in exactly one
(pycocotools' ranges are closed and an object of exactly 1024 or 9216 pixels counts in two).

A semantic label map has no instances, so the recall counts **ground-truth connected components** of each
thing-like class (8-connected, ``scipy.ndimage.label``): a component is *found* when the prediction gives its class
to at least half of its pixels. The recall of a class in a bucket is found / components; the mean over the classes
that have at least one component in the bucket is the summary figure. Sizes are in pixels of the evaluated label
maps (the evaluation resolution). Components touching each other in the ground truth (two adjacent pedestrians)
count as one, as any instance-free measure must.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fapn.runtime import all_reduce_sum

__all__ = [
    "SIZE_BUCKETS",
    "THING_LIKE_NAMES",
    "size_bucket",
    "thing_like_classes",
    "SmallObjectRecall",
    "small_object_recall_for",
    "format_small_object_recall",
]

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, float("inf")),
)
"""``(name, lowest area, area limit)``: COCO's area buckets in pixels, half-open ``[low, limit)``."""

THING_LIKE_NAMES = frozenset(
    {
        # countable objects of street scenes (Cityscapes' things plus its poles, lights and signs; CamVid's)
        "person",
        "pedestrian",
        "rider",
        "bicyclist",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
        "pole",
        "traffic light",
        "traffic sign",
        "sign",
        "signsymbol",
    }
)
"""Class names (lower case) that :func:`thing_like_classes` picks by default."""


def size_bucket(area: float) -> str:
    """COCO's size bucket (``small``, ``medium``, ``large``) of an object of ``area`` pixels.

    Example:
        >>> size_bucket(31 * 31), size_bucket(32 * 32), size_bucket(96 * 96)
        ('small', 'medium', 'large')
    """
    for name, low, limit in SIZE_BUCKETS:
        if low <= area < limit:
            return name
    raise ValueError(f"an area must be >= 0, got {area}")


def thing_like_classes(class_names: Sequence[str]) -> list[int]:
    """Indices of the classes whose name (any case) is in :data:`THING_LIKE_NAMES`: the countable objects.

    Example:
        >>> thing_like_classes(["Sky", "Pole", "Road", "SignSymbol", "Car"])
        [1, 3, 4]
    """
    return [i for i, name in enumerate(class_names) if name.lower() in THING_LIKE_NAMES]


class SmallObjectRecall:
    """Recall of ground-truth connected components of thing-like classes, per class and size bucket (see the
    module docstring for the rule).

    Args:
        classes: class indices to count (e.g. :func:`thing_like_classes`).
        class_names: names of all classes (default: the indices as strings).

    Example:
        >>> target = np.zeros((40, 40), np.int64)
        >>> target[1:3, 1:3] = 1  # a 4-pixel object
        >>> target[10:14, 10:14] = 1  # a 16-pixel object
        >>> pred = np.zeros_like(target)
        >>> pred[10:12, 10:14] = 1  # half of the second one
        >>> recall = SmallObjectRecall([1], ["background", "pole"])
        >>> recall.update(pred, target)
        >>> recall.compute()["per_class"]["pole"]["small"]
        {'recall': 50.0, 'components': 2}
    """

    def __init__(self, classes: Sequence[int], class_names: Sequence[str] | None = None) -> None:
        self.classes = [int(c) for c in classes]
        names = (
            list(class_names) if class_names is not None else [str(i) for i in range(max(self.classes, default=-1) + 1)]
        )
        missing = [c for c in self.classes if not 0 <= c < len(names)]
        if missing:
            raise ValueError(f"classes {missing} are outside the {len(names)} class names")
        self.names = [names[c] for c in self.classes]
        # [class, bucket, (components, found)]
        self.counts = torch.zeros(len(self.classes), len(SIZE_BUCKETS), 2, dtype=torch.int64)

    def update(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        """Add one image: ``[H, W]`` predicted and ground-truth class indices."""
        from scipy import ndimage

        pred_np = pred.cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
        target_np = target.cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
        if pred_np.shape != target_np.shape or target_np.ndim != 2:
            raise ValueError(f"prediction {pred_np.shape} and ground truth {target_np.shape} must be one [H, W] map")
        structure = np.ones((3, 3), dtype=bool)
        limits = np.array([limit for _, _, limit in SIZE_BUCKETS[:-1]])
        for row, cls in enumerate(self.classes):
            components, count = ndimage.label(target_np == cls, structure=structure)
            if count == 0:
                continue
            flat = components.ravel()
            sizes = np.bincount(flat, minlength=count + 1)[1:]
            covered = np.bincount(flat, weights=(pred_np.ravel() == cls), minlength=count + 1)[1:]
            found = 2 * covered >= sizes
            buckets = np.searchsorted(limits, sizes, side="right")
            self.counts[row, :, 0] += torch.from_numpy(np.bincount(buckets, minlength=len(SIZE_BUCKETS)))
            self.counts[row, :, 1] += torch.from_numpy(
                np.bincount(buckets, weights=found, minlength=len(SIZE_BUCKETS)).astype(np.int64)
            )

    def all_reduce(self) -> None:
        """Sum the counts of all processes (no-op outside ``torch.distributed``)."""
        self.counts = all_reduce_sum(self.counts)

    def compute(self) -> dict[str, Any]:
        """Recall in percent.

        Returns:
            ``{"classes": [names], "per_class": {name: {bucket: {"recall", "components"}}}, "mean_recall_small",
            "mean_recall_medium", "mean_recall_large"}``; a recall is ``None`` without components, and a mean
            averages the classes that have components in its bucket (``None`` if none has).
        """
        per_class: dict[str, dict[str, dict[str, Any]]] = {}
        for row, name in enumerate(self.names):
            per_class[name] = {}
            for column, (bucket, _, _) in enumerate(SIZE_BUCKETS):
                total, found = (int(v) for v in self.counts[row, column])
                per_class[name][bucket] = {"recall": 100.0 * found / total if total else None, "components": total}
        result: dict[str, Any] = {"classes": list(self.names), "per_class": per_class}
        for bucket, _, _ in SIZE_BUCKETS:
            values = [c[bucket]["recall"] for c in per_class.values() if c[bucket]["recall"] is not None]
            result[f"mean_recall_{bucket}"] = sum(values) / len(values) if values else None
        return result


def small_object_recall_for(class_names: Sequence[str]) -> SmallObjectRecall | None:
    """The recall that ``fapn eval`` and ``fapn score`` report for a dataset: over its thing-like classes
    (:func:`thing_like_classes`); ``None`` when it has none, or when scipy (the ``eval`` extra) is missing.

    Example:
        >>> small_object_recall_for(["sky", "road"]) is None
        True
    """
    classes = thing_like_classes(class_names)
    if not classes:
        return None
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return None
    return SmallObjectRecall(classes, class_names)


def format_small_object_recall(scores: dict[str, Any]) -> str:
    """A text table of :meth:`SmallObjectRecall.compute`: recall (components) per class and bucket, then the means.

    Example:
        >>> recall = SmallObjectRecall([0], ["pole"])
        >>> print(format_small_object_recall(recall.compute()).splitlines()[0])
        small-object recall (% of ground-truth components found; small < 32^2, medium < 96^2 pixels)
    """
    width = max(12, *(len(n) for n in scores["classes"])) if scores["classes"] else 12

    def cell(entry: dict[str, Any]) -> str:
        recall = "-" if entry["recall"] is None else f"{entry['recall']:.1f}"
        return f"{recall + ' (' + str(entry['components']) + ')':>16}"

    buckets = [name for name, _, _ in SIZE_BUCKETS]
    lines = [
        "small-object recall (% of ground-truth components found; small < 32^2, medium < 96^2 pixels)",
        f"{'class':<{width}}" + "".join(f"{b:>16}" for b in buckets),
    ]
    for name in scores["classes"]:
        lines.append(f"{name:<{width}}" + "".join(cell(scores["per_class"][name][b]) for b in buckets))
    means = [scores[f"mean_recall_{b}"] for b in buckets]
    lines.append(f"{'mean':<{width}}" + "".join(f"{'-' if m is None else f'{m:.1f}':>16}" for m in means))
    return "\n".join(lines)
