"""Boundary IoU and Boundary AP for instance segmentation (Cheng, Girshick, Dollar, Berg, Kirillov, CVPR 2021).

Following the authors' reference API (``bowenc0221/boundary-iou-api``):

* the boundary of a binary mask is the set of its pixels within ``d`` pixels (chessboard distance, i.e. ``d``
  erosions by a 3x3 square) of a pixel outside it, where the outside includes everything beyond the image border;
  ``d = max(1, round(dilation_ratio * image diagonal))`` with ``dilation_ratio = 0.02``;
* Boundary IoU of two masks is the IoU of their boundaries;
* Boundary AP is COCO's AP with, as the matching IoU, ``min(mask IoU, boundary IoU)`` for every non-crowd ground
  truth, and the plain mask IoU for crowd regions (``computeBoundaryIoU`` in their ``cocoeval.py``). Everything
  else (area ranges from the ground-truth ``area``, 100 detections, IoU thresholds 0.5:0.95) is COCO's.

:class:`BoundaryCOCOeval` is pycocotools' ``COCOeval`` with only the IoU computation replaced, so its AP equals
the reference API's. The erosion is a ``(2d + 1)``-square min-pool on a zero-padded mask, which is what ``d``
iterations of OpenCV's 3x3 erosion on their 1-pixel zero-padded mask compute. Needs pycocotools (``fapn[eval]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval
from torch import Tensor

__all__ = ["boundary_width", "mask_to_boundary", "boundary_iou", "BoundaryCOCOeval", "evaluate_boundary_ap"]


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """The boundary band width ``d`` in pixels for an image of ``height x width``.

    Example:
        >>> boundary_width(480, 640)  # 2% of the 800-pixel diagonal
        16
    """
    return max(1, round(dilation_ratio * float(np.hypot(height, width))))


def mask_to_boundary(mask: Tensor, dilation_ratio: float = 0.02) -> Tensor:
    """The inner boundary band of binary masks ``[..., H, W]`` (bool): mask minus its erosion by ``d`` pixels.

    Example:
        >>> m = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> m[0, 1:7, 1:7] = True
        >>> mask_to_boundary(m, dilation_ratio=0.1).int()[0, 3]  # d = 1: the outer ring of the square
        tensor([0, 1, 0, 0, 0, 0, 1, 0], dtype=torch.int32)
    """
    height, width = mask.shape[-2:]
    d = boundary_width(height, width, dilation_ratio)
    binary = mask.bool().reshape(-1, 1, height, width)
    # erosion = NOT dilation of the complement; beyond the border counts as outside (pad the complement with 1)
    outside = F.pad((~binary).float(), (d, d, d, d), value=1.0)
    near_outside = F.max_pool2d(outside, kernel_size=2 * d + 1, stride=1) > 0
    return (binary & near_outside).reshape(mask.shape)


def boundary_iou(a: Tensor, b: Tensor, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two binary masks ``[H, W]`` (1.0 when both boundaries are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same size, got {tuple(a.shape)} and {tuple(b.shape)}")
    ba, bb = mask_to_boundary(a, dilation_ratio), mask_to_boundary(b, dilation_ratio)
    union = int((ba | bb).sum())
    return 1.0 if union == 0 else int((ba & bb).sum()) / union


class BoundaryCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` for ``segm`` whose matching IoU is ``min(mask IoU, boundary IoU)`` (non-crowd).

    Use it as ``COCOeval(coco_gt, coco_dt, "segm")``: ``evaluate()``, ``accumulate()``, ``summarize()``, ``stats``.
    Boundaries are computed once per annotation from its RLE.

    Args:
        coco_gt, coco_dt: ``pycocotools.coco.COCO`` objects (``coco_dt`` from ``coco_gt.loadRes``).
        dilation_ratio: boundary width as a fraction of the image diagonal (0.02).
    """

    def __init__(self, coco_gt: Any, coco_dt: Any, dilation_ratio: float = 0.02) -> None:
        super().__init__(coco_gt, coco_dt, "segm")
        self.dilation_ratio = dilation_ratio

    def computeIoU(self, imgId: int, catId: int) -> Any:  # pycocotools' method and argument names
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        crowd = [int(g["iscrowd"]) for g in gt]
        ious = np.array(mask_utils.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], crowd))
        if len(gt) and len(dt):
            boundary = np.array(mask_utils.iou([self._boundary(d) for d in dt], [self._boundary(g) for g in gt], crowd))
            plain = np.array(crowd) == 0
            ious[:, plain] = np.minimum(ious[:, plain], boundary[:, plain])
        return ious

    def _boundary(self, ann: dict[str, Any]) -> dict[str, Any]:
        key = f"_boundary_rle_{self.dilation_ratio}"  # the ground truth's annotations are shared between runs
        if key not in ann:
            mask = torch.from_numpy(mask_utils.decode(ann["segmentation"]).astype(bool))
            band = mask_to_boundary(mask, self.dilation_ratio).numpy().astype(np.uint8)
            ann[key] = mask_utils.encode(np.asfortranarray(band))
        return ann[key]


def evaluate_boundary_ap(
    coco_gt: Any,
    results: list[dict[str, Any]],
    image_ids: Iterable[int] | None = None,
    dilation_ratio: float = 0.02,
) -> dict[str, float]:
    """Boundary AP, in percent, of COCO mask results (``{"AP", "AP50", "AP75", "APs", "APm", "APl"}``).

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` with the ground truth.
        results: COCO result dicts with ``segmentation`` (e.g. from
            :func:`fapn.metrics.coco.detections_to_coco_results`).
        image_ids: restrict to these images.
        dilation_ratio: boundary width as a fraction of the image diagonal.

    Returns:
        the six COCO summary numbers; 0 with no mask results, ``nan`` where COCO has no ground truth in a range.
    """
    from fapn.metrics.coco import coco_summary

    entries = [r for r in results if "segmentation" in r]
    return coco_summary(coco_gt, entries, lambda coco_dt: BoundaryCOCOeval(coco_gt, coco_dt, dilation_ratio), image_ids)
