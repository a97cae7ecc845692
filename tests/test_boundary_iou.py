"""Boundary IoU and Boundary AP against a direct per-pixel implementation written here (the definition of
Cheng et al. 2021 and their reference API: boundary = mask pixels within d of the outside, image border
included; Boundary AP matches on min(mask IoU, boundary IoU), plain mask IoU for crowd regions)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fapn.metrics.boundary_iou import (
    BoundaryCOCOeval,
    boundary_iou,
    boundary_width,
    evaluate_boundary_ap,
    mask_to_boundary,
)
from fapn.metrics.coco import evaluate_coco


def boundary_by_hand(mask: np.ndarray, d: int) -> np.ndarray:
    height, width = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y, x in itertools.product(range(height), range(width)):
        if not mask[y, x]:
            continue
        for dy, dx in itertools.product(range(-d, d + 1), repeat=2):
            yy, xx = y + dy, x + dx
            if not (0 <= yy < height and 0 <= xx < width) or not mask[yy, xx]:
                out[y, x] = True
                break
    return out


def iou_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def random_blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(3, height / 2), rng.uniform(3, width / 2)
    blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return blob | (rng.random((height, width)) < 0.05)  # speckles: isolated pixels are all boundary


def test_width_is_two_percent_of_the_diagonal() -> None:
    assert boundary_width(480, 640) == 16
    assert boundary_width(10, 10) == 1  # at least one pixel
    assert boundary_width(30, 40, dilation_ratio=0.1) == 5


@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.2])
def test_mask_to_boundary_equals_the_definition(ratio: float) -> None:
    rng = np.random.default_rng(0)
    height, width = 23, 31
    d = boundary_width(height, width, ratio)
    masks = np.stack([random_blob(rng, height, width) for _ in range(3)] + [np.ones((height, width), bool)])
    ours = mask_to_boundary(torch.from_numpy(masks), ratio).numpy()
    for mask, got in zip(masks, ours):
        np.testing.assert_array_equal(got, boundary_by_hand(mask, d))
    a, b = torch.from_numpy(masks[0]), torch.from_numpy(masks[1])
    expected = iou_by_hand(boundary_by_hand(masks[0], d), boundary_by_hand(masks[1], d))
    assert boundary_iou(a, b, ratio) == pytest.approx(expected, abs=1e-12)


def make_coco(gt_masks: dict[int, list[tuple[np.ndarray, int, int]]], size: tuple[int, int]) -> COCO:
    images, annotations = [], []
    for image_id, objects in gt_masks.items():
        images.append({"id": image_id, "height": size[0], "width": size[1], "file_name": f"{image_id}.png"})
        for mask, category, crowd in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "iscrowd": crowd,
                    "bbox": list(mask_utils.toBbox(rle)),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    coco.createIndex()
    return coco


def result(image_id: int, mask: np.ndarray, category: int, score: float) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "image_id": image_id,
        "category_id": category,
        "segmentation": rle,
        "score": score,
        "bbox": list(mask_utils.toBbox(rle)),
    }


def test_boundary_ap_matching_iou_is_min_of_mask_and_boundary_iou() -> None:
    rng = np.random.default_rng(1)
    size = (40, 60)
    d = boundary_width(*size)
    gts = [random_blob(rng, *size) for _ in range(3)]
    crowd = np.zeros(size, bool)
    crowd[:10, :20] = True
    coco = make_coco({1: [(gts[0], 1, 0), (gts[1], 1, 0), (crowd, 1, 1)], 2: [(gts[2], 2, 0)]}, size)
    dts = [random_blob(rng, *size) | gts[0], gts[1] & random_blob(rng, *size), random_blob(rng, *size)]
    results = [result(1, dts[0], 1, 0.9), result(1, dts[1], 1, 0.8), result(2, dts[2], 2, 0.7)]
    with torch.no_grad():
        evaluator = BoundaryCOCOeval(coco, coco.loadRes(results))
        evaluator.evaluate()
    ious = evaluator.ious[(1, 1)]  # detections by score x [gt0, gt1, crowd]
    for i, dt in enumerate(dts[:2]):
        for j, gt in enumerate(gts[:2]):
            expected = min(iou_by_hand(dt, gt), iou_by_hand(boundary_by_hand(dt, d), boundary_by_hand(gt, d)))
            assert ious[i, j] == pytest.approx(expected, abs=1e-9)
        # crowd region: pycocotools' crowd IoU (intersection over the detection), no boundary term
        assert ious[i, 2] == pytest.approx(np.logical_and(dt, crowd).sum() / dt.sum(), abs=1e-9)


def test_boundary_ap_on_constructed_predictions() -> None:
    size = (64, 64)
    square = np.zeros(size, bool)
    square[8:56, 8:56] = True
    jagged = square.copy()  # the same region with a comb along its border: mask IoU high, boundary IoU low
    jagged[8:56:2, 8:12] = False
    jagged[8:56:2, 52:56] = False
    jagged[8:12, 8:56:2] = False
    jagged[52:56, 8:56:2] = False
    coco = make_coco({1: [(square, 1, 0)], 2: [(square, 1, 0)]}, size)
    d = boundary_width(*size)
    assert iou_by_hand(jagged, square) > 0.75
    assert iou_by_hand(boundary_by_hand(jagged, d), boundary_by_hand(square, d)) < 0.5
    results = [result(1, square, 1, 0.9), result(2, jagged, 1, 0.9)]
    boundary = evaluate_boundary_ap(coco, results)
    masks = evaluate_coco(coco, results, ("segm",))["segm"]
    assert masks["AP50"] == pytest.approx(100.0)
    assert boundary["AP50"] == pytest.approx(50.0, abs=1.0)  # one of the two objects found
    perfect = evaluate_boundary_ap(coco, [result(1, square, 1, 0.9), result(2, square, 1, 0.9)])
    assert perfect["AP"] == pytest.approx(100.0)
    assert evaluate_boundary_ap(coco, [])["AP"] == 0.0
