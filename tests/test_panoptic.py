"""Panoptic FPN: semantic FPN head, the panoptic merge, PQ against hand-computed cases (and panopticapi)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fapn.data.coco_panoptic import id_to_rgb
from fapn.metrics.panoptic import PanopticQuality, pq_compute
from fapn.models.detection import (
    PanopticFPN,
    SemanticFPN,
    SemanticFPNHead,
    build_detection_model,
    panoptic_merge,
)

CATS = [{"id": 1, "isthing": 1, "name": "thing"}, {"id": 2, "isthing": 0, "name": "stuff"}]


# --- PQ -----------------------------------------------------------------------------------------------------


def test_pq_hand_computed_ious():
    gt = np.array([[1, 1, 2, 2]] * 4)
    pred = np.array([[10, 10, 10, 11], [10, 10, 10, 11], [10, 10, 11, 11], [10, 10, 11, 11]])
    pq = PanopticQuality(CATS)
    pq.update(
        gt,
        [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
        pred,
        [{"id": 10, "category_id": 1}, {"id": 11, "category_id": 2}],
    )
    result = pq.compute()
    # thing: |gt| 8, |pred| 10, inter 8 -> IoU 0.8; stuff: |gt| 8, |pred| 6, inter 6 -> IoU 0.75
    assert result["Things"]["pq"] == pytest.approx(80.0)
    assert result["Stuff"]["pq"] == pytest.approx(75.0)
    assert result["All"]["pq"] == pytest.approx(77.5)
    assert result["All"]["sq"] == pytest.approx(77.5) and result["All"]["rq"] == pytest.approx(100.0)


def test_pq_void_crowd_false_positives_and_negatives():
    pq = PanopticQuality([*CATS, {"id": 3, "isthing": 1, "name": "other"}])
    # image 1: row 0 void; the prediction covers void too, which the union leaves out -> IoU 1
    gt = np.array([[0, 0, 0, 0]] + [[1, 1, 1, 1]] * 3)
    pq.update(gt, [{"id": 1, "category_id": 1}], np.full((4, 4), 5), [{"id": 5, "category_id": 1}])
    assert (pq.stats[1].tp, pq.stats[1].fp, pq.stats[1].fn) == (1, 0, 0)
    assert pq.stats[1].iou == pytest.approx(1.0)
    # image 2: gt thing (cat 1) on the left half, crowd of cat 3 on the right half;
    # prediction: wrong category on the left (1 FN for cat 1, 1 FP for cat 3 -- not on crowd of cat 3? it is
    # outside it), a cat-3 segment inside the crowd (not an FP), a cat-1 segment on void-free... none.
    gt = np.array([[1, 1, 7, 7]] * 4)
    pred = np.array([[8, 8, 9, 9]] * 4)
    pq.update(
        gt,
        [{"id": 1, "category_id": 1}, {"id": 7, "category_id": 3, "iscrowd": 1}],
        pred,
        [{"id": 8, "category_id": 3}, {"id": 9, "category_id": 3}],
    )
    assert (pq.stats[1].tp, pq.stats[1].fn) == (1, 1)
    assert (pq.stats[3].tp, pq.stats[3].fp, pq.stats[3].fn) == (0, 1, 0)
    result = pq.compute()
    # cat 1: PQ = 1.0 / (1 + 0.5) ; cat 3: 0 ; stuff absent -> not counted
    assert result["per_class"][1]["pq"] == pytest.approx(100.0 / 1.5)
    assert result["Things"]["n"] == 2 and result["Stuff"]["n"] == 0
    assert result["Things"]["pq"] == pytest.approx(100.0 / 1.5 / 2)


def test_pq_rejects_inconsistent_input():
    pq = PanopticQuality(CATS)
    with pytest.raises(ValueError, match="no entry"):
        pq.update(np.ones((2, 2)), [{"id": 1, "category_id": 1}], np.full((2, 2), 4), [])
    with pytest.raises(ValueError, match="differ in size"):
        pq.update(np.ones((2, 2)), [], np.ones((3, 2)), [])


def _write_panoptic(folder, name, ids, segments):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id_to_rgb(ids)).save(folder / name)
    return {"image_id": int(name.split(".")[0]), "file_name": name, "segments_info": segments}


def _random_panoptic_pair(tmp_path):
    rng = np.random.default_rng(0)
    categories = [*CATS, {"id": 3, "isthing": 1, "name": "b"}, {"id": 4, "isthing": 0, "name": "s"}]
    gt_annotations, pred_annotations = [], []
    for image_id in range(1, 5):
        gt = np.zeros((24, 32), dtype=np.int64)
        gt_segments = []
        for k, (cat, crowd) in enumerate([(2, 0), (4, 0), (1, 0), (3, 0), (1, 1)]):
            y, x = rng.integers(0, 16), rng.integers(0, 24)
            region = np.zeros_like(gt, dtype=bool)
            region[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = True
            if k < 2:
                region = rng.random(gt.shape) < 0.5 if k == 0 else gt == 0
            gt[region] = 100 + k
            gt_segments.append({"id": 100 + k, "category_id": cat, "iscrowd": crowd})
        gt[rng.random(gt.shape) < 0.05] = 0
        present = set(np.unique(gt).tolist())
        gt_segments = [{**s, "area": int((gt == s["id"]).sum())} for s in gt_segments if s["id"] in present]
        pred = gt.copy()
        pred[rng.random(gt.shape) < 0.15] = 0
        pred[:, :3] = 999  # an extra segment
        pred_segments = [
            {"id": s["id"], "category_id": s["category_id"]}
            for s in gt_segments
            if s["id"] in set(np.unique(pred).tolist())
        ] + [{"id": 999, "category_id": 3}]
        gt_annotations.append(_write_panoptic(tmp_path / "gt", f"{image_id}.png", gt, gt_segments))
        pred_annotations.append(_write_panoptic(tmp_path / "pred", f"{image_id}.png", pred, pred_segments))
    images = [{"id": a["image_id"], "file_name": a["file_name"], "height": 24, "width": 32} for a in gt_annotations]
    (tmp_path / "gt.json").write_text(
        json.dumps({"images": images, "annotations": gt_annotations, "categories": categories})
    )
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_annotations}))
    return tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred"


def test_pq_compute_files_against_panopticapi(tmp_path):
    """Our file-level PQ against COCO's panopticapi (``pip install panopticapi-lite``), when installed."""
    evaluation = pytest.importorskip("panopticapi.evaluation")
    gt_json, gt_dir, pred_json, pred_dir = _random_panoptic_pair(tmp_path)
    ours = pq_compute(gt_json, gt_dir, pred_json, pred_dir)
    theirs = evaluation.pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] == pytest.approx(100 * theirs[group][key], abs=1e-9)


def test_pq_compute_files_matches_accumulator(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = _random_panoptic_pair(tmp_path)
    result = pq_compute(gt_json, gt_dir, pred_json, pred_dir)
    assert 0 < result["All"]["pq"] < 100 and result["Things"]["n"] == 2 and result["Stuff"]["n"] == 2


# --- panoptic merge -----------------------------------------------------------------------------------------


def test_panoptic_merge_thresholds():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, 0:2] = True  # A, score .9: rows 0-1
    masks[1, 1:3] = True  # B, score .8: half already taken (not > 0.5): keeps row 2 only
    masks[2, 0:3, :4] = True  # C, score .7: 8 of 12 pixels taken (> 0.5): dropped
    masks[3, 6:8] = True  # D, score .3: below the score threshold
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3])
    labels = torch.tensor([1, 2, 1, 1])
    semantic = torch.zeros(8, 8, dtype=torch.long)
    semantic[3:7] = 1  # stuff 1: 32 pixels
    semantic[7, :3] = 2  # stuff 2: 3 pixels, below the area threshold
    panoptic, segments = panoptic_merge(
        masks, scores, labels, semantic, overlap_threshold=0.5, stuff_area_threshold=4, instance_score_threshold=0.5
    )
    assert [(s["id"], s["isthing"], s["category_id"], s["area"]) for s in segments] == [
        (1, True, 1, 16),
        (2, True, 2, 8),
        (3, False, 1, 32),
    ]
    assert (panoptic[0:2] == 1).all() and (panoptic[2] == 2).all() and (panoptic[3:7] == 3).all()
    assert (panoptic[7] == 0).all()  # semantic "thing" (0) and small stuff stay void


# --- heads and the model ------------------------------------------------------------------------------------


def test_semantic_fpn_head_structure_and_parameters():
    head = SemanticFPNHead(256, 54)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in h.modules()) for h in head.scale_heads]
    ups = [sum(isinstance(m, torch.nn.Upsample) for m in h.modules()) for h in head.scale_heads]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3]
    gn = 2 * 128
    hand = 4 * (256 * 128 * 9 + gn) + 3 * (128 * 128 * 9 + gn) + 128 * 54 + 54
    assert sum(p.numel() for p in head.parameters()) == hand
    assert all(
        isinstance(m, torch.nn.GroupNorm) and m.num_groups == 32
        for h in head.scale_heads
        for m in h.modules()
        if isinstance(m, torch.nn.GroupNorm)
    )


def test_semantic_fpn_any_input_size():
    from fapn.models.detection import resnet_fapn_backbone

    model = SemanticFPN(resnet_fapn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), 5).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 70, 90)).shape == (1, 5, 70, 90)


@pytest.fixture(scope="module")
def panoptic_model() -> PanopticFPN:
    torch.manual_seed(0)
    return build_detection_model(
        detector="panoptic_fpn",
        backbone="resnet18",
        num_classes=3,
        num_stuff_classes=2,
        min_size=96,
        max_size=96,
        rpn_pre_nms_top_n_train=50,
        rpn_post_nms_top_n_train=20,
        box_batch_size_per_image=8,
        panoptic_kwargs={"stuff_area_threshold": 16},
    )


def _panoptic_target():
    masks = torch.zeros(1, 80, 96, dtype=torch.uint8)
    masks[0, 20:50, 30:70] = 1
    sem = torch.ones(80, 96, dtype=torch.long)
    sem[40:] = 2
    sem[masks[0].bool()] = 0
    sem[:5] = 255
    return {
        "boxes": torch.tensor([[30.0, 20.0, 70.0, 50.0]]),
        "labels": torch.tensor([2]),
        "masks": masks,
        "sem_seg": sem,
    }


def test_panoptic_fpn_semantic_loss_is_half_the_cross_entropy(panoptic_model):
    model = panoptic_model.train()
    image = torch.rand(3, 80, 96)
    target = _panoptic_target()
    losses = model([image], [target])
    assert {"loss_sem_seg", "loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    assert model.semantic_head.predictor.weight.grad.abs().sum() > 0
    # independent recomputation: resize (96/80 = 1.2x) the target by nearest, pad to 32 with ignore
    det = model.detector
    with torch.no_grad():
        images, _ = det.transform([image], [{k: v for k, v in target.items() if k != "sem_seg"}])
        logits = model.semantic_head(list(det.backbone(images.tensors).values())[:4])
        h, w = images.image_sizes[0]
        resized = F.interpolate(target["sem_seg"][None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        padded = torch.full(logits.shape[-2:], 255, dtype=torch.long)
        padded[:h, :w] = resized
        expected = 0.5 * F.cross_entropy(logits, padded[None], ignore_index=255)
    torch.testing.assert_close(losses["loss_sem_seg"], expected)


def test_panoptic_fpn_inference_outputs(panoptic_model):
    model = panoptic_model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 80, 96)])[0]
    assert out["panoptic_seg"].shape == (80, 96) and out["sem_seg"].shape == (3, 80, 96)
    ids = set(out["panoptic_seg"].unique().tolist()) - {0}
    assert ids == {s["id"] for s in out["segments_info"]}
    for s in out["segments_info"]:
        assert s["area"] == int((out["panoptic_seg"] == s["id"]).sum())
