"""COCO box and mask AP with pycocotools, from torchvision detector outputs."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["COCO_STAT_NAMES", "detections_to_coco_results", "evaluate_coco", "coco_summary", "format_coco_metrics"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco_results(
    image_id: int,
    detection: Mapping[str, Tensor],
    label_to_category: Mapping[int, int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """One detector output (boxes ``XYXY``, labels, scores, optional soft masks) as COCO result entries.

    Args:
        image_id: the COCO image id.
        detection: ``boxes`` ``[N, 4]``, ``labels`` ``[N]``, ``scores`` ``[N]``, optionally ``masks``
            ``[N, 1, H, W]`` probabilities at the image size.
        label_to_category: contiguous label -> COCO category id.
        mask_threshold: masks are binarised at this probability.

    Returns:
        dicts with ``image_id``, ``category_id``, ``bbox`` (``XYWH``), ``score`` and, with masks,
        ``segmentation`` (compressed RLE, ``counts`` as a string).

    Example:
        >>> det = {
        ...     "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
        ...     "labels": torch.tensor([1]),
        ...     "scores": torch.tensor([0.9]),
        ... }
        >>> detections_to_coco_results(7, det, {1: 18})[0]["bbox"]
        [10.0, 20.0, 20.0, 40.0]
    """
    boxes = detection["boxes"].detach().cpu().to(torch.float64)
    labels = detection["labels"].detach().cpu().tolist()
    scores = detection["scores"].detach().cpu().tolist()
    results: list[dict[str, Any]] = []
    rles: list[dict[str, Any]] | None = None
    if "masks" in detection:
        from pycocotools import mask as mask_utils

        binary = (detection["masks"].detach().cpu()[:, 0] >= mask_threshold).numpy().astype(np.uint8)
        rles = []
        for m in binary:
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            rles.append(rle)
    for i, (box, label, score) in enumerate(zip(boxes.tolist(), labels, scores)):
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(label_to_category[int(label)]),
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": float(score),
        }
        if rles is not None:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


def evaluate_coco(
    coco_gt: Any,
    results: list[dict[str, Any]],
    iou_types: Iterable[str] = ("bbox", "segm"),
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """COCO AP (the official ``COCOeval``) for each IoU type, in percent.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` with the ground truth.
        results: COCO result dicts (:func:`detections_to_coco_results`).
        iou_types: ``"bbox"`` and/or ``"segm"``.
        image_ids: restrict to these images (default: all ground-truth images).
        verbose: print pycocotools' summary table.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}``; ``-1`` where COCO has no ground truth
        in a size range, as pycocotools reports it (converted to ``nan``), 0 with no detections.
    """
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        entries = results if iou_type == "bbox" else [r for r in results if "segmentation" in r]
        metrics[iou_type] = coco_summary(
            coco_gt, entries, partial(COCOeval, coco_gt, iouType=iou_type), image_ids, verbose
        )
    return metrics


def coco_summary(
    coco_gt: Any,
    entries: list[dict[str, Any]],
    make_evaluator: Callable[[Any], Any],
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """The six COCO summary numbers, in percent, of ``entries`` evaluated by ``make_evaluator(coco_dt)`` (a
    pycocotools ``COCOeval`` or a subclass, for ``coco_dt`` the loaded results) on ``image_ids`` (default: all
    ground-truth images); 0 each with no entries, ``nan`` where pycocotools reports -1 (no ground truth in a size
    range). pycocotools' printing is captured (shown with ``verbose``). The one evaluation run of
    :func:`evaluate_coco` and :func:`fapn.metrics.boundary_iou.evaluate_boundary_ap`.
    """
    if not entries:
        return dict.fromkeys(COCO_STAT_NAMES, 0.0)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        coco_dt = coco_gt.loadRes(copy.deepcopy(entries))
        evaluator = make_evaluator(coco_dt)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(stdout.getvalue())
    return {
        name: (float(value) * 100.0 if value >= 0 else float("nan"))
        for name, value in zip(COCO_STAT_NAMES, evaluator.stats[:6])
    }


def format_coco_metrics(metrics: Mapping[str, Any]) -> str:
    """The metrics of a detection evaluation as lines: AP per kind (``bbox``, ``segm``, ``boundary``), then PQ /
    SQ / RQ per panoptic group; ``""`` when there are none.

    Example:
        >>> print(format_coco_metrics({"bbox": {"AP": 41.0, "AP50": 60.5}}))
        bbox: AP 41.00, AP50 60.50
    """
    lines = [
        f"{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics[key].items())
        for key in ("bbox", "segm", "boundary")
        if key in metrics
    ]
    panoptic = metrics.get("panoptic", {})
    for group in ("All", "Things", "Stuff", "Things_small", "Things_medium", "Things_large"):
        if f"{group}_pq" in panoptic:
            lines.append(
                f"{group:13s} PQ {panoptic[f'{group}_pq']:.2f}  SQ {panoptic[f'{group}_sq']:.2f}  "
                f"RQ {panoptic[f'{group}_rq']:.2f}  (n={panoptic[f'{group}_n']})"
            )
    return "\n".join(lines)
