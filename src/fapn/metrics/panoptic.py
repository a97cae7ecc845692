"""Panoptic quality (PQ, SQ, RQ; Kirillov et al. 2019), computed as COCO's ``panopticapi`` computes it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fapn.metrics.small_objects import SIZE_BUCKETS, size_bucket

__all__ = ["PanopticQuality", "pq_compute"]

_OFFSET = 256 * 256 * 256
_VOID = 0


@dataclass
class _CategoryStat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


class PanopticQuality:
    """Accumulates panoptic matches image by image; :meth:`compute` gives PQ, SQ, RQ per group.

    The rules are panopticapi's ``pq_compute``: predicted areas are counted from the map (ground-truth areas
    come from ``segments_info`` when they have an ``area``, as in COCO's JSON); a ground-truth and
    a predicted segment of the same category match when IoU > 0.5, where the union leaves out the predicted
    pixels on void (id 0); crowd ground truth never matches; an unmatched prediction is no false positive
    when more than half of it lies on void or on a crowd region of its category.

    PQ by object size (``Things_small``, ``Things_medium``, ``Things_large``; COCO's buckets,
    :func:`fapn.metrics.small_objects.size_bucket`) is not part of panopticapi: a matched pair and an unmatched
    ground-truth thing (a false negative) go to the bucket of the ground-truth area, an unmatched predicted thing
    (a false positive) to the bucket of its own area; each bucket's PQ, SQ and RQ are then averaged over the thing
    categories with any segment in it, as panopticapi averages the full set.

    Args:
        categories: ``{category_id: {"isthing": 0/1, ...}}`` or a list of COCO category dicts.

    Example:
        >>> pq = PanopticQuality([{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}])
        >>> gt = np.array([[1, 1], [2, 2]])
        >>> pred = np.array([[5, 5], [6, 0]])
        >>> pq.update(
        ...     gt,
        ...     [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
        ...     pred,
        ...     [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}],
        ... )
        >>> round(pq.compute()["All"]["pq"], 2)  # thing IoU 1; stuff IoU 1/2 is no match: PQ (1 + 0) / 2
        50.0
    """

    def __init__(self, categories: Mapping[int, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> None:
        if isinstance(categories, Mapping):
            self.categories = {int(k): dict(v) for k, v in categories.items()}
        else:
            self.categories = {int(c["id"]): dict(c) for c in categories}
        self.stats = {cat: _CategoryStat() for cat in self.categories}
        things = [cat for cat, c in self.categories.items() if c.get("isthing")]
        self.size_stats = {bucket: {cat: _CategoryStat() for cat in things} for bucket, _, _ in SIZE_BUCKETS}

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Iterable[Mapping[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Iterable[Mapping[str, Any]],
    ) -> None:
        """Add one image.

        Args:
            gt_ids: ``[H, W]`` ground-truth segment ids, 0 = void.
            gt_segments: ``{"id", "category_id", "iscrowd" (optional)}`` per ground-truth segment.
            pred_ids: ``[H, W]`` predicted segment ids, 0 = void.
            pred_segments: ``{"id", "category_id"}`` per predicted segment.

        Raises:
            ValueError: sizes differ, an id in a map has no segment entry, a segment has no pixels (for
                predictions, as panopticapi), or a category is unknown.
        """
        gt_ids = np.asarray(gt_ids, dtype=np.int64)
        pred_ids = np.asarray(pred_ids, dtype=np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"ground truth {gt_ids.shape} and prediction {pred_ids.shape} differ in size")
        gt = {int(s["id"]): dict(s) for s in gt_segments}
        pred = {int(s["id"]): dict(s) for s in pred_segments}
        for segments, ids, what in ((gt, gt_ids, "ground truth"), (pred, pred_ids, "prediction")):
            counted: dict[int, int] = dict.fromkeys(segments, 0)
            for segment in segments.values():
                if int(segment["category_id"]) not in self.categories:
                    raise ValueError(f"{what} segment {segment['id']} has unknown category {segment['category_id']}")
            labels, counts = np.unique(ids, return_counts=True)
            for label, count in zip(labels.tolist(), counts.tolist()):
                if label == _VOID:
                    continue
                if label not in segments:
                    raise ValueError(f"{what} map has segment id {label} with no entry in its segments_info")
                counted[label] = count
            for label, segment in segments.items():
                # panopticapi counts predicted areas but takes ground-truth areas from the JSON when given
                if what == "prediction" or "area" not in segment:
                    segment["area"] = counted[label]
        missing = [k for k, s in pred.items() if s["area"] == 0]
        if missing:
            raise ValueError(f"predicted segments {missing} are listed but have no pixels in the map")

        combined = gt_ids * _OFFSET + pred_ids
        labels, counts = np.unique(combined, return_counts=True)
        intersections = {(int(k // _OFFSET), int(k % _OFFSET)): int(c) for k, c in zip(labels, counts)}

        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        for (gt_label, pred_label), intersection in intersections.items():
            if gt_label not in gt or pred_label not in pred:
                continue
            gt_segment, pred_segment = gt[gt_label], pred[pred_label]
            if gt_segment.get("iscrowd", 0) == 1:
                continue
            if gt_segment["category_id"] != pred_segment["category_id"]:
                continue
            union = pred_segment["area"] + gt_segment["area"] - intersection - intersections.get((_VOID, pred_label), 0)
            iou = intersection / union
            if iou > 0.5:
                category = int(gt_segment["category_id"])
                for stat in self._stats_of(category, gt_segment["area"]):
                    stat.tp += 1
                    stat.iou += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        crowd_by_category: dict[int, int] = {}
        for gt_label, segment in gt.items():
            if gt_label in gt_matched:
                continue
            if segment.get("iscrowd", 0) == 1:
                crowd_by_category[int(segment["category_id"])] = gt_label
                continue
            if segment["area"] == 0:  # listed but absent from the map: panopticapi never sees it
                continue
            for stat in self._stats_of(int(segment["category_id"]), segment["area"]):
                stat.fn += 1

        for pred_label, segment in pred.items():
            if pred_label in pred_matched:
                continue
            intersection = intersections.get((_VOID, pred_label), 0)
            category = int(segment["category_id"])
            if category in crowd_by_category:
                intersection += intersections.get((crowd_by_category[category], pred_label), 0)
            if intersection / segment["area"] > 0.5:
                continue
            for stat in self._stats_of(category, segment["area"]):
                stat.fp += 1

    def _stats_of(self, category: int, area: float) -> list[_CategoryStat]:
        """The counters a segment of ``category`` and ``area`` pixels adds to: its category's, and for a thing
        its size bucket's."""
        stats = [self.stats[category]]
        if category in self.size_stats["small"]:
            stats.append(self.size_stats[size_bucket(area)][category])
        return stats

    def compute(self) -> dict[str, dict[Any, Any]]:
        """PQ, SQ, RQ in percent and ``n`` (categories counted) for ``All``, ``Things`` and ``Stuff``, the same
        for things by size (``Things_small``, ``Things_medium``, ``Things_large``; see the class docstring), plus
        ``per_class`` ``{category_id: {"pq", "sq", "rq"}}`` (categories that occur only)."""
        per_class = _per_class(self.stats)
        results: dict[str, dict[Any, Any]] = {}
        for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            cats = [c for c in per_class if isthing is None or bool(self.categories[c]["isthing"]) == isthing]
            results[group] = _average(per_class, cats)
        for bucket, stats in self.size_stats.items():
            by_size = _per_class(stats)
            results[f"Things_{bucket}"] = _average(by_size, list(by_size))
        results["per_class"] = per_class
        return results


def _per_class(stats: Mapping[int, _CategoryStat]) -> dict[int, dict[str, float]]:
    """PQ, SQ, RQ in percent of the categories with any segment (panopticapi's ``pq_average`` terms)."""
    per_class: dict[int, dict[str, float]] = {}
    for cat, stat in stats.items():
        denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
        if denominator == 0:
            continue
        sq = stat.iou / stat.tp if stat.tp else 0.0
        rq = stat.tp / denominator
        per_class[cat] = {"pq": 100.0 * sq * rq, "sq": 100.0 * sq, "rq": 100.0 * rq}
    return per_class


def _average(per_class: Mapping[int, Mapping[str, float]], cats: list[int]) -> dict[str, Any]:
    n = len(cats)
    result: dict[str, Any] = {
        key: (sum(per_class[c][key] for c in cats) / n if n else 0.0) for key in ("pq", "sq", "rq")
    }
    result["n"] = n
    return result


def pq_compute(
    gt_json: str | os.PathLike[str],
    gt_folder: str | os.PathLike[str],
    pred_json: str | os.PathLike[str],
    pred_folder: str | os.PathLike[str],
) -> dict[str, dict[Any, Any]]:
    """panopticapi's ``pq_compute`` on COCO panoptic files: ground truth and predictions as PNG + JSON.

    Args:
        gt_json: ground-truth panoptic JSON (with ``categories``).
        gt_folder: its PNGs.
        pred_json: predictions, ``{"annotations": [{"image_id", "file_name", "segments_info"}]}``.
        pred_folder: their PNGs.

    Returns:
        as :meth:`PanopticQuality.compute`.

    Raises:
        ValueError: an image without a prediction.
    """
    from fapn.data.coco_panoptic import read_panoptic_png

    gt = json.loads(Path(gt_json).read_text())
    pred = json.loads(Path(pred_json).read_text())
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    metric = PanopticQuality(gt["categories"])
    for annotation in gt["annotations"]:
        if annotation["image_id"] not in predictions:
            raise ValueError(f"no prediction for image {annotation['image_id']}")
        prediction = predictions[annotation["image_id"]]
        metric.update(
            read_panoptic_png(Path(gt_folder) / annotation["file_name"]),
            annotation["segments_info"],
            read_panoptic_png(Path(pred_folder) / prediction["file_name"]),
            prediction["segments_info"],
        )
    return metric.compute()
