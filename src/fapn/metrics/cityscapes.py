"""The four official Cityscapes numbers: IoU and iIoU, over classes and over categories.

The same computation as ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` (its label table, its
average instance sizes, its rules), accumulated image by image in label-id space:

* a 34 x 34 confusion matrix of label ids (ground truth x prediction); a class's false positives are counted only
  on ground-truth pixels of evaluated classes, its false negatives on every prediction;
* **iIoU**: for every ground-truth instance (``*_gtFine_instanceIds.png``, ids ``label * 1000 + k``) of an
  evaluated class, its true positive and false negative pixels weighted by ``average size of the class / size of
  the instance``, so that large instances do not dominate; false positives as for IoU;
* **categories** merge their classes (``flat``, ``construction``, ...); the category iIoU exists only for the
  categories whose classes all have instances (``human``, ``vehicle``) and, as in the official script, counts a
  prediction of any class of the category, evaluated or not (caravan and trailer for ``vehicle``);
* averages skip NaN entries (a class absent from both ground truth and prediction).

Needs cityscapesscripts (``fapn[eval]``).

Example:
    >>> evaluator = CityscapesEvaluator()  # doctest: +SKIP
    >>> evaluator.update(prediction_label_ids, gt_label_ids, gt_instance_ids)  # doctest: +SKIP
    >>> evaluator.compute()["classes"]["IoU"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CityscapesEvaluator", "format_cityscapes"]

_NUM_IDS = 34  # label ids 0..33; "license plate" (-1) is not a valid id in label images


def _labels() -> tuple[list[Any], dict[str, list[Any]], dict[str, float]]:
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
        from cityscapesscripts.helpers.labels import category2labels, labels
    except ImportError as err:  # pragma: no cover - the eval extra is installed in CI
        raise ImportError("Cityscapes iIoU needs cityscapesscripts: pip install 'fapn[eval]'") from err
    return [label for label in labels if label.id >= 0], category2labels, dict(official.args.avgClassSize)


def _mean(scores: dict[str, float]) -> float:
    valid = [s for s in scores.values() if not math.isnan(s)]
    return sum(valid) / len(valid) if valid else float("nan")


def _ratio(tp: float, fp: float, fn: float) -> float:
    denominator = tp + fp + fn
    return float("nan") if denominator == 0 else float(tp) / denominator


class CityscapesEvaluator:
    """Accumulates Cityscapes' IoU and iIoU (classes and categories) over images; see the module docstring."""

    def __init__(self) -> None:
        labels, category2labels, self.average_sizes = _labels()
        self.by_id = {label.id: label for label in labels}
        self.evaluated = [label.id for label in labels if not label.ignoreInEval]
        self.instance_classes = [label.id for label in labels if label.hasInstances and not label.ignoreInEval]
        self.categories = {
            c: [label.id for label in members if label.id >= 0 and not label.ignoreInEval]
            for c, members in category2labels.items()
        }
        self.instance_categories: dict[str, list[int]] = {}
        for category, members in category2labels.items():
            ids = [label.id for label in members if label.id >= 0]
            if all(self.by_id[i].hasInstances for i in ids):
                self.instance_categories[category] = ids
        self.confusion = np.zeros((_NUM_IDS, _NUM_IDS), dtype=np.int64)
        self.class_tp_fn = {i: [0.0, 0.0] for i in self.instance_classes}
        self.category_tp_fn = {c: [0.0, 0.0] for c in self.instance_categories}
        self.with_instances = True
        self.num_images = 0

    def update(self, prediction: np.ndarray, gt_labels: np.ndarray, gt_instances: np.ndarray | None = None) -> None:
        """Add one image: predicted label ids, ground-truth label ids and (for iIoU) ground-truth instance ids,
        all ``[H, W]`` at full resolution. Without instance ids the iIoU of the whole run is ``None``."""
        prediction, gt_labels = np.asarray(prediction, dtype=np.int64), np.asarray(gt_labels, dtype=np.int64)
        if prediction.shape != gt_labels.shape:
            raise ValueError(f"prediction is {prediction.shape} but the ground truth {gt_labels.shape}")
        for name, array in (("prediction", prediction), ("ground truth", gt_labels)):
            if array.size and (array.min() < 0 or array.max() >= _NUM_IDS):
                raise ValueError(
                    f"{name} holds value {array.max() if array.max() >= _NUM_IDS else array.min()}, "
                    f"not a Cityscapes label id (0..{_NUM_IDS - 1})"
                )
        self.confusion += np.bincount(
            (gt_labels * _NUM_IDS + prediction).ravel(), minlength=_NUM_IDS * _NUM_IDS
        ).reshape(_NUM_IDS, _NUM_IDS)
        self.num_images += 1
        if gt_instances is None:
            self.with_instances = False
            return
        gt_instances = np.asarray(gt_instances, dtype=np.int64)
        if gt_instances.shape != gt_labels.shape:
            raise ValueError(f"instance ids are {gt_instances.shape} but the label ids {gt_labels.shape}")
        category_masks = {c: np.isin(prediction, ids) for c, ids in self.instance_categories.items()}
        for instance in np.unique(gt_instances[gt_instances > 1000]):
            label = self.by_id.get(int(instance) // 1000)
            if label is None or label.ignoreInEval:
                continue
            if label.id not in self.class_tp_fn:
                raise ValueError(f"instance id {instance} belongs to {label.name!r}, a class without instances")
            mask = gt_instances == instance
            size = int(mask.sum())
            weight = self.average_sizes[label.name] / size
            tp = int(np.count_nonzero(prediction[mask] == label.id))
            self.class_tp_fn[label.id][0] += tp * weight
            self.class_tp_fn[label.id][1] += (size - tp) * weight
            if label.category in category_masks:
                category_tp = int(np.count_nonzero(category_masks[label.category][mask]))
                self.category_tp_fn[label.category][0] += category_tp * weight
                self.category_tp_fn[label.category][1] += (size - category_tp) * weight

    def update_files(self, prediction_png: str | os.PathLike[str], gt_label_png: str | os.PathLike[str]) -> None:
        """Add one image from files: a prediction PNG of label ids and ``*_gtFine_labelIds.png``; the instance ids
        are read from the ``*_gtFine_instanceIds.png`` beside it when it exists (as the official script does)."""
        from PIL import Image

        gt_label_png = Path(gt_label_png)
        instance_png = gt_label_png.with_name(gt_label_png.name.replace("labelIds", "instanceIds"))
        instances = np.array(Image.open(instance_png)) if instance_png.is_file() else None
        self.update(np.array(Image.open(prediction_png)), np.array(Image.open(gt_label_png)), instances)

    def _false_positives(self, columns: list[int], excluded_rows: set[int]) -> int:
        rows = [i for i in self.evaluated if i not in excluded_rows]
        return int(self.confusion[np.ix_(rows, columns)].sum())

    def compute(self) -> dict[str, Any]:
        """Scores in percent: ``{"classes": {"IoU", "iIoU", "per_class": {name: {"IoU", "iIoU"}}},
        "categories": {...same, "per_category"}, "num_images"}``; iIoU entries are ``None`` without instance ids
        and NaN entries are left out of the means."""
        c = self.confusion
        class_iou, class_iiou = {}, {}
        for i in self.evaluated:
            name = self.by_id[i].name
            tp, fn = int(c[i, i]), int(c[i].sum() - c[i, i])
            fp = self._false_positives([i], {i})
            class_iou[name] = _ratio(tp, fp, fn)
            if i in self.class_tp_fn:
                tp_w, fn_w = self.class_tp_fn[i]
                class_iiou[name] = _ratio(tp_w, fp, fn_w)
        category_iou, category_iiou = {}, {}
        for category, ids in self.categories.items():
            if not ids:
                continue  # void: nothing evaluated
            tp = int(c[np.ix_(ids, ids)].sum())
            fn = int(c[ids].sum()) - tp
            outside = {i for i in self.evaluated if self.by_id[i].category == category}
            category_iou[category] = _ratio(tp, self._false_positives(ids, outside), fn)
        for category, ids in self.instance_categories.items():
            outside = {i for i in self.evaluated if self.by_id[i].category == category}
            tp_w, fn_w = self.category_tp_fn[category]
            category_iiou[category] = _ratio(tp_w, self._false_positives(ids, outside), fn_w)
        instances = self.with_instances and self.num_images > 0

        def percent(scores: dict[str, float]) -> dict[str, float]:
            return {k: v * 100.0 for k, v in scores.items()}

        def block(iou: dict[str, float], iiou: dict[str, float], key: str) -> dict[str, Any]:
            names = list(iou)
            return {
                "IoU": _mean(iou) * 100.0,
                "iIoU": _mean(iiou) * 100.0 if instances else None,
                key: {
                    n: {"IoU": iou[n] * 100.0, "iIoU": (percent(iiou)[n] if instances and n in iiou else None)}
                    for n in names
                },
            }

        return {
            "classes": block(class_iou, class_iiou, "per_class"),
            "categories": block(category_iou, category_iiou, "per_category"),
            "num_images": self.num_images,
        }


def format_cityscapes(scores: dict[str, Any]) -> str:
    """The four numbers as the Cityscapes benchmark lists them, one line.

    Example:
        >>> format_cityscapes({"classes": {"IoU": 80.0, "iIoU": 60.5}, "categories": {"IoU": 90.1, "iIoU": None}})
        'IoU class 80.00  iIoU class 60.50  IoU category 90.10  iIoU category n/a'
    """

    def value(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    return (
        f"IoU class {value(scores['classes']['IoU'])}  iIoU class {value(scores['classes']['iIoU'])}  "
        f"IoU category {value(scores['categories']['IoU'])}  iIoU category {value(scores['categories']['iIoU'])}"
    )
