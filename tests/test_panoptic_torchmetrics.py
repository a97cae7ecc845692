"""PQ against an independent implementation: torchmetrics' ``PanopticQuality`` on generated images.

torchmetrics installs beside numpy 2 (panopticapi does not), so this comparison runs in CI. The two follow the
same paper (Kirillov et al. 2019) but differ in conventions; the generated cases keep to where they agree:

- Void in the *prediction*: torchmetrics also leaves the ground-truth pixels that the prediction marks void out of
  the union, and drops a ground-truth segment that is mostly void in the prediction from the false negatives;
  panopticapi (and ``fapn.metrics.panoptic``) does neither. The predictions here have no void pixels.
- Crowd regions: torchmetrics has none. No ground-truth segment here is a crowd.
- Stuff: torchmetrics merges every segment of a stuff category into one; here each stuff category has at most
  one segment per image, in ground truth and prediction alike.

Void in the ground truth (id 0 here; a category outside ``things | stuffs`` for torchmetrics) is handled the same
way by both: left out of the union and no false positive for a prediction lying mostly on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fapn.metrics.panoptic import PanopticQuality

torchmetrics_detection = pytest.importorskip("torchmetrics.detection")

THINGS = (1, 3)
STUFFS = (2, 4)
CATEGORIES = [{"id": c, "isthing": int(c in THINGS)} for c in (*THINGS, *STUFFS)]


def _random_image(rng: np.random.Generator, size: int, *, void: bool) -> tuple[np.ndarray, dict[int, int]]:
    """A segment-id map and ``{segment id: category}``: two stuff halves, a few thing boxes, optional void."""
    ids = np.zeros((size, size), dtype=np.int64)
    categories: dict[int, int] = {}
    split = int(rng.integers(2, size - 2))
    stuff = rng.permutation(STUFFS)
    ids[:split], ids[split:] = 1, 2
    categories[1], categories[2] = int(stuff[0]), int(stuff[1])
    for segment in range(3, 3 + int(rng.integers(1, 5))):
        y, x = rng.integers(0, size - 2, size=2)
        h, w = rng.integers(2, size // 2 + 1, size=2)
        ids[y : y + h, x : x + w] = segment
        categories[segment] = int(rng.choice(THINGS))
    if void:
        y, x = rng.integers(0, size - 3, size=2)
        ids[y : y + 3, x : x + 3] = 0
    present = set(np.unique(ids).tolist()) - {0}
    return ids, {k: v for k, v in categories.items() if k in present}


def _perturb(rng: np.random.Generator, ids: np.ndarray, categories: dict[int, int]) -> tuple[np.ndarray, dict]:
    """A prediction from a ground truth: segments shifted, some relabelled, one spurious box; no void pixels."""
    size = ids.shape[0]
    pred = np.roll(ids, shift=tuple(int(s) for s in rng.integers(-1, 2, size=2)), axis=(0, 1)) + 100
    pred[pred == 100] = 101  # void -> the first stuff segment: the prediction has no void
    labels = {k + 100: v for k, v in categories.items()}
    labels.setdefault(101, categories.get(1, STUFFS[0]))
    for segment, category in list(labels.items()):
        if category in THINGS and rng.random() < 0.3:
            labels[segment] = THINGS[1 - THINGS.index(category)]
    y, x = rng.integers(0, size - 3, size=2)
    pred[y : y + 3, x : x + 3] = 200
    labels[200] = int(rng.choice(THINGS))
    present = set(np.unique(pred).tolist())
    return pred, {k: v for k, v in labels.items() if k in present}


def _to_torchmetrics(ids: np.ndarray, categories: dict[int, int]) -> torch.Tensor:
    """``[H, W, 2]`` (category, instance) as torchmetrics takes it; void -> category 0 (neither thing nor stuff)."""
    lookup = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    for segment, category in categories.items():
        lookup[segment] = category
    return torch.from_numpy(np.stack([lookup[ids], ids], axis=-1))


def _segments_info(categories: dict[int, int]) -> list[dict[str, int]]:
    return [{"id": k, "category_id": v} for k, v in categories.items()]


def pq_and_torchmetrics_pq(rng: np.random.Generator, images: int) -> tuple[PanopticQuality, Any]:
    """Our PQ and torchmetrics' (per class, with SQ and RQ), both fed the same ``images`` generated 16x16 images
    (every other one with void in the ground truth)."""
    ours = PanopticQuality(CATEGORIES)
    reference = torchmetrics_detection.PanopticQuality(
        things=set(THINGS), stuffs=set(STUFFS), return_sq_and_rq=True, return_per_class=True
    )
    for image in range(images):
        gt, gt_cats = _random_image(rng, 16, void=image % 2 == 1)
        pred, pred_cats = _perturb(rng, gt, gt_cats)
        ours.update(gt, _segments_info(gt_cats), pred, _segments_info(pred_cats))
        reference.update(_to_torchmetrics(pred, pred_cats)[None], _to_torchmetrics(gt, gt_cats)[None])
    return ours, reference


@pytest.mark.parametrize("seed", range(6))
def test_pq_equals_torchmetrics_on_generated_images(seed):
    ours, reference = pq_and_torchmetrics_pq(np.random.default_rng(seed), images=4)
    result = ours.compute()
    # rows: things then stuffs, each sorted; pq, sq, rq; torchmetrics sums IoUs in float32, hence rel=1e-6 below
    per_class = reference.compute().reshape(-1, 3).double()
    order = sorted(THINGS) + sorted(STUFFS)
    assert result["per_class"], "the generated images must produce matches to compare"
    for row, category in enumerate(order):
        if category not in result["per_class"]:
            continue
        expected = per_class[row] * 100
        got = result["per_class"][category]
        assert [got["pq"], got["sq"], got["rq"]] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-5), category
    # the average over the categories that occur: both skip categories with TP + FP + FN = 0
    tm_average = torchmetrics_detection.PanopticQuality(things=set(THINGS), stuffs=set(STUFFS))
    rng = np.random.default_rng(seed)
    for image in range(4):
        gt, gt_cats = _random_image(rng, 16, void=image % 2 == 1)
        pred, pred_cats = _perturb(rng, gt, gt_cats)
        tm_average.update(_to_torchmetrics(pred, pred_cats)[None], _to_torchmetrics(gt, gt_cats)[None])
    assert result["All"]["pq"] == pytest.approx(100 * float(tm_average.compute()), rel=1e-6)


def test_generated_cases_exercise_tp_fp_fn_and_void():
    """The comparison above is only as good as its cases: they must contain matches, misses and void."""
    rng = np.random.default_rng(0)
    ours = PanopticQuality(CATEGORIES)
    saw_void = False
    for image in range(4):
        gt, gt_cats = _random_image(rng, 16, void=image % 2 == 1)
        saw_void |= bool((gt == 0).any())
        pred, pred_cats = _perturb(rng, gt, gt_cats)
        assert not (pred == 0).any()
        ours.update(gt, _segments_info(gt_cats), pred, _segments_info(pred_cats))
    stats = ours.stats.values()
    assert saw_void
    assert sum(s.tp for s in stats) > 0 and sum(s.fp for s in stats) > 0 and sum(s.fn for s in stats) > 0
