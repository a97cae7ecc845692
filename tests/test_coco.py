"""Synthetic COCO-format data, the COCO datasets, and box/mask AP through pycocotools."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fapn.data.coco_detection import CocoInstances, collate_detection
from fapn.data.coco_panoptic import CocoPanoptic, read_panoptic_png
from fapn.data.synthetic_coco import make_synthetic_coco
from fapn.metrics.coco import detections_to_coco_results, evaluate_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("syn"), num_images=6, height=64, width=80, seed=3)


def _coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_synthetic_instances_agree_with_panoptic_pngs(synthetic):
    coco = _coco(synthetic["instances"])
    panoptic = json.loads(synthetic["panoptic_json"].read_text())
    assert {c["id"] for c in panoptic["categories"]} == {1, 2, 3, 101, 102}
    for annotation in panoptic["annotations"]:
        ids = read_panoptic_png(synthetic["panoptic_root"] / annotation["file_name"])
        assert (ids > 0).all()  # stuff and things cover every pixel
        things = [s for s in annotation["segments_info"] if s["category_id"] < 100]
        instances = coco.loadAnns(coco.getAnnIds(imgIds=annotation["image_id"]))
        assert len(things) == len(instances)
        for segment, instance in zip(things, instances):
            np.testing.assert_array_equal(ids == segment["id"], coco.annToMask(instance).astype(bool))
            assert segment["category_id"] == instance["category_id"] and segment["area"] == instance["area"]
        for segment in annotation["segments_info"]:
            assert segment["area"] == int((ids == segment["id"]).sum())


def test_synthetic_is_deterministic(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", num_images=2, height=32, width=32, seed=5)
    b = make_synthetic_coco(tmp_path / "b", num_images=2, height=32, width=32, seed=5)
    assert a["instances"].read_text() == b["instances"].read_text()


def test_coco_instances_targets(synthetic):
    data = CocoInstances(synthetic["images"], synthetic["instances"])
    coco = data.coco
    assert data.num_classes == 4 and data.label_to_category == {1: 1, 2: 2, 3: 3}
    image, target = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 80) and 0 <= image.min() <= image.max() <= 1
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=int(target["image_id"])))
    xywh = torch.tensor([a["bbox"] for a in annotations])
    torch.testing.assert_close(target["boxes"], torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
    assert target["masks"].shape == (len(annotations), 64, 80) and target["masks"].dtype == torch.uint8
    images, targets = collate_detection([data[0], data[1]])
    assert len(images) == len(targets) == 2


def test_coco_instances_flip_moves_boxes_and_masks_together(synthetic):
    torch.manual_seed(1)
    data = CocoInstances(synthetic["images"], synthetic["instances"], train=True)
    plain = CocoInstances(synthetic["images"], synthetic["instances"])
    _, reference = plain[1]
    for _ in range(8):  # at least one flip (p = 1 - 2^-8)
        _, target = data[1]
        if not torch.equal(target["masks"], reference["masks"]):
            break
    torch.testing.assert_close(target["masks"], reference["masks"].flip(-1))
    boxes = reference["boxes"].clone()
    boxes[:, [0, 2]] = 80 - reference["boxes"][:, [2, 0]]
    torch.testing.assert_close(target["boxes"], boxes)


def test_coco_panoptic_targets(synthetic):
    data = CocoPanoptic(synthetic["images"], synthetic["panoptic_json"], synthetic["panoptic_root"])
    assert data.num_classes == 4 and data.num_stuff_classes == 2
    coco = _coco(synthetic["instances"])
    for index in range(len(data)):
        _, target = data[index]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=int(target["image_id"])))
        thing = np.zeros((64, 80), dtype=bool)
        for a in annotations:
            thing |= coco.annToMask(a).astype(bool)
        sem = target["sem_seg"].numpy()
        assert ((sem == 0) == thing).all() and set(np.unique(sem[~thing]).tolist()) <= {1, 2}
        xywh = torch.tensor([a["bbox"] for a in annotations])
        torch.testing.assert_close(target["boxes"], torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))


def _gt_as_detections(coco: COCO, image_id: int, score: float = 1.0) -> dict[str, torch.Tensor]:
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    xywh = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64)
    masks = torch.stack([torch.from_numpy(coco.annToMask(a)).float() for a in annotations])[:, None]
    return {
        "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
        "masks": masks,
        "labels": torch.tensor([a["category_id"] for a in annotations]),
        "scores": torch.full((len(annotations),), score),
    }


def test_perfect_predictions_give_ap_100(synthetic):
    coco = _coco(synthetic["instances"])
    results = []
    for image_id in coco.getImgIds():
        results += detections_to_coco_results(image_id, _gt_as_detections(coco, image_id), {1: 1, 2: 2, 3: 3})
    metrics = evaluate_coco(coco, results)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["segm"]["AP"] == pytest.approx(100.0)


def test_ap_hand_computed_case(tmp_path):
    """Two objects, one found (score 0.9), one false positive (score 0.8) ranked below it, one missed:
    precision is 1 up to recall 0.5 and nothing after, so COCO's 101-point AP is 51/101 at every IoU."""
    mask = np.zeros((40, 40), dtype=np.uint8)
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    gt = {
        "images": [{"id": 1, "height": 40, "width": 40, "file_name": "x.png"}],
        "categories": [{"id": 7, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 2, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 20, 12, 12], "area": 144.0, "iscrowd": 0},
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = _coco(tmp_path / "gt.json")
    detection = {
        "boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0], [30.0, 0.0, 39.0, 8.0]]),
        "labels": torch.tensor([1, 1]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    results = detections_to_coco_results(1, detection, {1: 7})
    assert results[0]["bbox"] == [2.0, 2.0, 10.0, 10.0] and results[0]["category_id"] == 7
    metrics = evaluate_coco(coco, results, iou_types=("bbox",))
    assert metrics["bbox"]["AP"] == pytest.approx(100 * 51 / 101)
    assert metrics["bbox"]["AP50"] == pytest.approx(100 * 51 / 101)
    assert evaluate_coco(coco, [], iou_types=("bbox",))["bbox"]["AP"] == 0.0
