"""Small-object figures: COCO's size buckets, the semantic small-object recall against a hand-computed case, PQ
by object size (hand-computed, and equal to torchmetrics' PQ where every thing is small), AP by size from
pycocotools' own summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fapn.metrics.panoptic import PanopticQuality
from fapn.metrics.small_objects import (
    SIZE_BUCKETS,
    SmallObjectRecall,
    format_small_object_recall,
    size_bucket,
    small_object_recall_for,
    thing_like_classes,
)

pytest.importorskip("scipy")


def test_size_buckets_are_cocos_with_half_open_limits():
    assert [(name, low, limit) for name, low, limit in SIZE_BUCKETS][:2] == [
        ("small", 0.0, 1024.0),
        ("medium", 1024.0, 9216.0),
    ]
    assert [size_bucket(a) for a in (0, 1023, 1024, 9215, 9216, 1e9)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]
    with pytest.raises(ValueError, match="area"):
        size_bucket(-1)


def test_thing_like_classes_of_camvid_and_cityscapes():
    from fapn.data.camvid import CAMVID_INFO
    from fapn.data.cityscapes import CITYSCAPES_INFO

    camvid = [CAMVID_INFO.class_names[i] for i in thing_like_classes(CAMVID_INFO.class_names)]
    assert camvid == ["Pole", "SignSymbol", "Car", "Pedestrian", "Bicyclist"]
    cityscapes = [CITYSCAPES_INFO.class_names[i] for i in thing_like_classes(CITYSCAPES_INFO.class_names)]
    assert cityscapes == [
        "pole",
        "traffic light",
        "traffic sign",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    assert small_object_recall_for(["sky", "road"]) is None


def test_recall_hand_computed():
    """Class 1 ("pole") and class 2 ("car") on a 120x120 map, counted by hand:

    pole: A 3x3 (9 px, small) fully predicted -> found; B 2x10 (20 px, small), 10 px predicted (exactly half) ->
    found; C two pixels touching diagonally (8-connected: one 2-px component), neither predicted -> missed;
    D 40x40 (1600 px, medium), 799 px predicted (< half) -> missed.
    car: E 100x100 (10000 px, large), predicted as pole -> missed; F 30x30 (900 px, small), all predicted -> found.
    Recall: pole small 2/3, medium 0/1, large -; car small 1/1, large 0/1. Means: small (66.67 + 100) / 2, medium 0
    (pole only), large 0 (car only).
    """
    target = np.zeros((120, 120), np.int64)
    pred = np.zeros_like(target)
    target[0:3, 0:3] = 1
    pred[0:3, 0:3] = 1
    target[5:7, 0:10] = 1
    pred[5:7, 0:5] = 1
    target[10, 0] = target[11, 1] = 1
    target[0:40, 20:60] = 1
    pred[0:40, 20:60] = 1
    pred.reshape(-1)[np.flatnonzero(target.reshape(-1) == 1)[-801:]] = 0  # 1600 - 801 = 799 left predicted
    assert (pred[0:40, 20:60] == 1).sum() == 799
    target[45:75, 65:95] = 2
    pred[45:75, 65:95] = 2
    recall = SmallObjectRecall([1, 2], ["background", "pole", "car"])
    recall.update(torch.from_numpy(pred), torch.from_numpy(target))
    large_target = np.zeros((120, 120), np.int64)
    large_target[0:100, 0:100] = 2
    recall.update(np.ones_like(large_target), large_target)
    scores = recall.compute()
    assert scores["classes"] == ["pole", "car"]
    pole, car = scores["per_class"]["pole"], scores["per_class"]["car"]
    assert pole["small"] == {"recall": pytest.approx(200 / 3), "components": 3}
    assert pole["medium"] == {"recall": 0.0, "components": 1}
    assert pole["large"] == {"recall": None, "components": 0}
    assert car["small"] == {"recall": 100.0, "components": 1}
    assert car["large"] == {"recall": 0.0, "components": 1}
    assert scores["mean_recall_small"] == pytest.approx((200 / 3 + 100) / 2)
    assert scores["mean_recall_medium"] == 0.0 and scores["mean_recall_large"] == 0.0
    table = format_small_object_recall(scores)
    assert "66.7 (3)" in table and "0.0 (1)" in table


def test_recall_refuses_mismatched_maps_and_unknown_classes():
    with pytest.raises(ValueError, match="outside"):
        SmallObjectRecall([5], ["a", "b"])
    with pytest.raises(ValueError, match="one \\[H, W\\] map"):
        SmallObjectRecall([0], ["a"]).update(np.zeros((2, 3)), np.zeros((3, 2)))


# --- panoptic quality by size ------------------------------------------------------------------------------------


def test_pq_by_size_hand_computed():
    """One thing category, one stuff category on 100x100: a medium thing (40x40) predicted exactly (IoU 1), a
    small thing (5x5) missed (FN, small by its ground-truth area) and a spurious 4x4 prediction (FP, small by its
    own area); the rest is stuff. Things_small: TP 0, FP 1, FN 1 -> PQ 0; Things_medium: TP 1 (IoU 1) -> PQ 100; Things_large: no segment (n 0). Things overall: TP 1,
    FP 1, FN 1 -> SQ 1, RQ 1 / 2, PQ 50."""
    gt = np.full((100, 100), 9, np.int64)  # stuff segment 9
    gt[0:40, 0:40] = 1
    gt[60:65, 60:65] = 2
    pred = np.full((100, 100), 19, np.int64)
    pred[0:40, 0:40] = 11
    pred[80:84, 80:84] = 12
    pred[60:65, 60:65] = 19  # the small thing is predicted as stuff
    pq = PanopticQuality([{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}])
    pq.update(
        gt,
        [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 9, "category_id": 2}],
        pred,
        [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 1}, {"id": 19, "category_id": 2}],
    )
    result = pq.compute()
    assert result["Things"]["pq"] == pytest.approx(50.0) and result["Things"]["n"] == 1
    assert result["Things_small"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert result["Things_medium"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 1}
    assert result["Things_large"]["n"] == 0
    small = pq.size_stats["small"][1]
    assert (small.tp, small.fp, small.fn) == (0, 1, 1)
    # the buckets partition the thing counts
    total = pq.stats[1]
    for field in ("tp", "fp", "fn"):
        assert sum(getattr(pq.size_stats[b][1], field) for b, _, _ in SIZE_BUCKETS) == getattr(total, field)


def test_pq_small_equals_torchmetrics_things_when_every_thing_is_small():
    """On 16x16 images every thing is small, so PQ of small things is torchmetrics' PQ of the things."""
    pytest.importorskip("torchmetrics.detection")
    from test_panoptic_torchmetrics import THINGS, pq_and_torchmetrics_pq

    ours, reference = pq_and_torchmetrics_pq(np.random.default_rng(3), images=6)
    result = ours.compute()
    per_class = reference.compute().reshape(-1, 3).double() * 100
    rows = [row for row, category in enumerate(sorted(THINGS)) if category in result["per_class"]]
    assert rows, "the generated images must hold things"
    expected = per_class[rows].mean(dim=0).tolist()
    small = result["Things_small"]
    assert [small["pq"], small["sq"], small["rq"]] == pytest.approx(expected, rel=1e-6, abs=1e-5)
    assert small["n"] == len(rows) and result["Things_medium"]["n"] == 0 and result["Things_large"]["n"] == 0


# --- box and mask AP by size -------------------------------------------------------------------------------------


def test_ap_by_size_is_pycocotools_own_summary():
    """APs / APm / APl are pycocotools' ``stats[3:6]``: a perfect small detection and a missed large object give
    AP_small 100, AP_large 0, no medium object (nan)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    from fapn.metrics.coco import evaluate_coco

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": 200, "width": 200}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 120, 120], "area": 14400, "iscrowd": 0},
        ],
    }
    gt.createIndex()
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    boxes = evaluate_coco(gt, results, ("bbox",))["bbox"]
    assert boxes["APs"] == pytest.approx(100.0)
    assert boxes["APl"] == pytest.approx(0.0)
    assert np.isnan(boxes["APm"])


# --- in fapn eval and fapn score ---------------------------------------------------------------------------------


def test_semantic_eval_reports_the_recall_of_its_own_predictions():
    from fapn.data import eval_transforms, synthetic_streets
    from fapn.engine.semseg.eval import evaluate, predict_logits
    from fapn.models import realtime_fapn

    dataset = synthetic_streets(split="val", size=(64, 64), num_images=2, transforms=eval_transforms())
    torch.manual_seed(0)
    model = realtime_fapn(num_classes=8).eval()
    scores = evaluate(model, dataset, progress=False)
    expected = SmallObjectRecall(thing_like_classes(dataset.info.class_names), dataset.info.class_names)
    for index in range(len(dataset)):
        image, target = dataset[index]
        expected.update(predict_logits(model, image[None]).argmax(1)[0], torch.as_tensor(target))
    assert scores["small_objects"] == expected.compute()
    assert scores["small_objects"]["classes"] == ["pole", "sign", "car"]
    assert scores["small_objects"]["per_class"]["pole"]["small"]["components"] > 0


def test_score_reports_the_recall_of_saved_predictions(tmp_path, capsys):
    """``fapn score`` on a CamVid-layout folder: predictions equal to the ground truth find every component."""
    from PIL import Image

    from fapn.cli.main import main

    rng = np.random.default_rng(0)
    for split in ("val", "valannot"):
        (tmp_path / split).mkdir()
    (tmp_path / "pred").mkdir()
    label = np.full((40, 48), 3, np.uint8)  # road
    label[5:20, 10:12] = 2  # a pole, 30 px
    label[30:34, 30:36] = 9  # a pedestrian, 24 px
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "val" / "f1.png")
    Image.fromarray(label).save(tmp_path / "valannot" / "f1.png")
    prediction = label.copy()
    prediction[30:34, 30:36] = 3  # the pedestrian missed
    Image.fromarray(prediction).save(tmp_path / "pred" / "f1.png")
    argv = ["score", "--dataset", "camvid", "--gt-root", str(tmp_path), "--pred", str(tmp_path / "pred"), "--json"]
    assert main(argv) == 0
    small = json.loads(capsys.readouterr().out)["small_objects"]
    assert small["per_class"]["Pole"]["small"] == {"recall": 100.0, "components": 1}
    assert small["per_class"]["Pedestrian"]["small"] == {"recall": 0.0, "components": 1}
    assert small["mean_recall_small"] == 50.0
