"""Confusion-matrix metrics and the boundary metric against independent float64 / scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fapn.metrics import (
    BoundaryConfusionMatrix,
    ConfusionMatrix,
    boundary_band,
    confusion_matrix,
    format_table,
    scores_from_confusion,
)


def reference_scores(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int) -> dict:
    """Per-class IoU by counting sets, pixel by pixel (float64)."""
    keep = target != ignore
    p, t = pred[keep], target[keep]
    ious, accs = [], []
    for c in range(num_classes):
        tp = np.sum((p == c) & (t == c), dtype=np.float64)
        fp = np.sum((p == c) & (t != c), dtype=np.float64)
        fn = np.sum((p != c) & (t == c), dtype=np.float64)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        accs.append(tp / (tp + fn) if tp + fn else np.nan)
    return {"iou": np.array(ious) * 100, "acc": np.array(accs) * 100, "pix": np.mean(p == t) * 100}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_a_pixel_counting_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes, ignore = 6, 255
    target = rng.integers(0, num_classes, (3, 17, 23))
    target[rng.random(target.shape) < 0.1] = ignore
    target[target == 4] = ignore  # class 4 absent from the ground truth...
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes + 2, target.shape))
    pred[pred == ignore] = 0
    cm = ConfusionMatrix(num_classes, ignore, [f"c{i}" for i in range(num_classes)])
    for i in range(3):  # accumulated over batches
        cm.update(torch.from_numpy(pred[i]), torch.from_numpy(target[i]))
    scores = cm.compute()
    ref = reference_scores(pred, target, num_classes, ignore)
    ours = np.array([np.nan if v is None else v for v in scores["per_class_iou"].values()])
    np.testing.assert_allclose(ours, ref["iou"], rtol=0, atol=1e-9, equal_nan=True)
    assert ours[4] == 0.0  # ...but predicted: IoU 0, counted in the mean
    assert scores["mIoU"] == pytest.approx(np.nanmean(ref["iou"]), abs=1e-9)
    assert scores["pixel_accuracy"] == pytest.approx(ref["pix"], abs=1e-9)
    assert scores["mean_accuracy"] == pytest.approx(np.nanmean(ref["acc"]), abs=1e-9)
    assert "c4" in format_table(scores)


def test_class_absent_everywhere_is_left_out_of_the_mean() -> None:
    cm = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 3)
    scores = scores_from_confusion(cm)
    assert scores["per_class_iou"]["2"] is None
    assert scores["mIoU"] == pytest.approx((50 + 50) / 2)


def test_ground_truth_outside_class_set_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


def scipy_band(target: np.ndarray, width: int) -> np.ndarray:
    ndimage = pytest.importorskip("scipy.ndimage")
    size = 2 * width + 1
    high = ndimage.maximum_filter(target, size=size, mode="nearest")
    low = ndimage.minimum_filter(target, size=size, mode="nearest")
    return high != low


@pytest.mark.parametrize("width", [1, 2, 3])
def test_boundary_band_equals_scipy_morphology(width: int) -> None:
    rng = np.random.default_rng(width)
    target = np.repeat(np.repeat(rng.integers(0, 4, (6, 8)), 5, axis=0), 5, axis=1)
    target[3, 10:12] = 255
    band = boundary_band(torch.from_numpy(target), width).numpy()
    np.testing.assert_array_equal(band, scipy_band(target, width))


def test_boundary_metric_rewards_sharp_edges_where_miou_barely_moves() -> None:
    target = torch.zeros(64, 64, dtype=torch.int64)
    target[:, 32:] = 1
    shifted = torch.roll(target, 2, dims=1)  # boundary 2 px off
    shifted[:, :2] = 0
    full = ConfusionMatrix(2)
    full.update(shifted, target)
    band = BoundaryConfusionMatrix(2, width=3)
    band.update(shifted, target)
    assert full.compute()["mIoU"] > 90
    assert band.compute()["mIoU"] < 60
    exact = BoundaryConfusionMatrix(2, width=3)
    exact.update(target, target)
    assert exact.compute()["mIoU"] == 100
