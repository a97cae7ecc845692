"""``fapn compare --figure3``: the supplementary's Figure 3 layout from six tiny random-weight checkpoints (Faster
R-CNN, Mask R-CNN, Panoptic FPN, each with FPN and FaPN): the image chosen by the stated rule, panels checked
against the models' own outputs drawn by ``fapn.visualize.small_objects``, the small objects framed, and the
one-line errors for a wrong set of checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.checkpoint import save_checkpoint
from fapn.cli.compare import figure3_images
from fapn.cli.main import main
from fapn.inference import load_image
from fapn.visualize.small_objects import SMALL_OUTLINE_COLOR, draw_boxes, outline_boxes
from test_compare_instances import HEIGHT, WIDTH, tiny_detector

pytest.importorskip("pycocotools")

DETECTORS = {"detection": "fasterrcnn", "instance": "maskrcnn", "panoptic": "panoptic_fpn"}
# image a.png: two small objects; b.png: one small, one large
GROUND_TRUTH = {"a.png": [[4, 4, 10, 8], [40, 30, 12, 10]], "b.png": [[2, 2, 8, 8], [10, 10, 50, 35]]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("figure3")
    weights, models = [], {}
    meta = {"class_names": ["__background__", "box", "disc"], "stuff_names": ["__things__", "sky", "ground"]}
    for task in DETECTORS:
        for neck in ("fpn", "fapn"):
            options = {"num_stuff_classes": 2} if task == "panoptic" else {}
            model, config = tiny_detector(DETECTORS[task], neck, **options)
            path = root / f"{task}_{neck}.pt"
            save_checkpoint({"model": model.state_dict(), "model_config": config, "dataset": meta}, path)
            weights.append(str(path))
            models[task, neck] = model
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for index, (name, boxes) in enumerate(GROUND_TRUTH.items(), start=1):
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(root / name)
        images.append({"id": index, "file_name": name, "height": HEIGHT, "width": WIDTH})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    instances = root / "instances.json"
    instances.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]})
    )
    return root, weights, models, instances


def test_images_are_picked_by_their_count_of_small_ground_truth_objects(setup):
    root, _, _, instances = setup
    picked = figure3_images([root / "b.png", root / "a.png"], str(instances), 2)
    assert [p.name for p, _ in picked] == ["a.png", "b.png"]  # 2 small objects before 1
    np.testing.assert_array_equal(picked[1][1], [[2, 2, 10, 10]])  # XYXY of b's small object only
    assert [p.name for p, boxes in figure3_images([root / "b.png"], None, 1)] == ["b.png"]


def test_figure3_layout_and_panels(setup, capsys):
    root, weights, models, instances = setup
    out = root / "out"
    argv = ["compare", "--figure3", "--weights", *reversed(weights), "--instances", str(instances), "--pick", "1"]
    argv += ["--out", str(out), "--width", str(WIDTH), "--score-threshold", "0.0", "--threads", "1"]
    argv += [str(root / "b.png"), str(root / "a.png")]
    assert main(argv) == 0
    assert "1 groups: a.png" in capsys.readouterr().out
    figure = np.asarray(Image.open(out / "figure3.png").convert("RGB"))
    header, title, pad = 22, 20, 4
    assert figure.shape[1] == 3 * WIDTH + 2 * pad
    # top-left panel: FPN boxes, the Faster R-CNN's detections in their class colours, small objects framed
    image = load_image(root / "a.png")
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    with torch.no_grad():
        output = models["detection", "fpn"]([tensor])[0]
    assert len(output["boxes"]) > 0
    from fapn.data.base import default_palette

    palette = [[0, 0, 0], *[list(c) for c in default_palette(4)[:2]]]
    drawn = draw_boxes(image, output["boxes"].numpy(), output["labels"].tolist(), palette)
    small = np.array([[4, 4, 14, 12], [40, 30, 52, 40]], dtype=float)
    expected = outline_boxes(drawn, small, margin=2)
    panel = figure[header + title : header + title + HEIGHT, :WIDTH]
    np.testing.assert_array_equal(panel, expected)
    assert (panel == SMALL_OUTLINE_COLOR).all(axis=-1).sum() > 20
    # bottom row is FaPN: its boxes panel differs from FPN's (other weights, other detections)
    bottom = figure[header + 2 * title + HEIGHT + pad : header + 2 * title + 2 * HEIGHT + pad, :WIDTH]
    assert bottom.shape == panel.shape and not np.array_equal(bottom, panel)


def test_figure3_needs_the_six_checkpoints(setup, capsys):
    root, weights, _, _ = setup
    base = ["compare", "--figure3", "--out", str(root / "bad"), str(root / "a.png"), "--weights"]
    assert main([*base, *weights[:5]]) == 2
    assert "missing: panoptic/fapn" in capsys.readouterr().err
    assert main([*base, *weights[:5], weights[0]]) == 2
    assert "two detection checkpoints with the fpn neck" in capsys.readouterr().err
    assert main([*base, *weights, "--names", "A", "B", "C", "D", "E", "F"]) == 2
    assert "--figure3 names its rows" in capsys.readouterr().err
