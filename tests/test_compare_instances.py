"""``fapn compare`` on instance segmentation checkpoints: the supplementary's Figure 2 layout (image | FPN | FaPN,
each model's masks with their boundaries outlined), checked panel by panel against the models' own predictions
drawn with ``draw_instances``; and the clear errors when instance and semantic checkpoints are mixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.checkpoint import save_checkpoint
from fapn.cli.main import main
from fapn.inference import load_image
from fapn.models.detection import build_detection_model
from fapn.visualize.instances import draw_instances

HEIGHT, WIDTH, TITLE, PAD = 48, 64, 20, 4  # panels drawn at the image's own width: no resizing


def tiny_detector(detector: str, neck: str, **options: object) -> tuple[torch.nn.Module, dict]:
    """A random-init ``build_detection_model`` detector on ResNet-18 small enough for a CPU test (``HEIGHT x WIDTH``
    images, three classes), and its ``model_config``; ``options`` add to the builder's arguments."""
    config = dict(
        detector=detector,
        backbone="resnet18",
        neck=neck,
        num_classes=3,
        min_size=HEIGHT,
        max_size=WIDTH,
        rpn_pre_nms_top_n_test=30,
        rpn_post_nms_top_n_test=10,
        box_detections_per_img=3,
        box_score_thresh=0.0,  # random weights: keep their (low-scoring) detections, so there is something to draw
        **options,
    )
    torch.manual_seed(0)
    return build_detection_model(**config).eval(), {"name": "build_detection_model", **config}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module], Path]:
    root = tmp_path_factory.mktemp("compare_instances")
    models = {}
    for neck in ("fpn", "fapn"):
        model, config = tiny_detector("pointrend_maskrcnn", neck)
        save_checkpoint({"model": model.state_dict(), "model_config": config}, root / f"{neck}.pt")
        models[neck] = model
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "street.png")
    return root, models, root / "street.png"


def _panel(figure: np.ndarray, column: int) -> np.ndarray:
    left = column * (WIDTH + PAD)
    return figure[TITLE : TITLE + HEIGHT, left : left + WIDTH]


def test_compare_draws_image_fpn_fapn_with_each_models_masks(checkpoints, capsys) -> None:
    root, models, image_path = checkpoints
    out = root / "figures"
    argv = ["compare", str(image_path), "--weights", str(root / "fpn.pt"), str(root / "fapn.pt")]
    argv += ["--names", "FPN", "FaPN", "--out", str(out), "--width", str(WIDTH), "--score-threshold", "0.0"]
    assert main([*argv, "--threads", "1"]) == 0
    assert "wrote 1 figures" in capsys.readouterr().out
    figure = np.asarray(Image.open(out / "street_compare.png").convert("RGB"))
    assert figure.shape == (TITLE + HEIGHT, 3 * WIDTH + 2 * PAD, 3)  # one row: image | FPN | FaPN

    image = load_image(image_path)
    np.testing.assert_array_equal(_panel(figure, 0), image)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    drawn = []
    for column, neck in ((1, "fpn"), (2, "fapn")):
        with torch.no_grad():  # after main(): the same thread count, so the same arithmetic
            output = models[neck]([tensor])[0]
        assert len(output["scores"]) > 0
        expected = draw_instances(image, output["masks"][:, 0].numpy() >= 0.5, output["scores"].numpy(), 0.0)
        np.testing.assert_array_equal(_panel(figure, column), expected, err_msg=f"column {column} is not {neck}")
        drawn.append(expected)
    assert not np.array_equal(drawn[0], image) and not np.array_equal(drawn[0], drawn[1])


def test_compare_refuses_mixed_checkpoints_and_ground_truth(checkpoints, capsys) -> None:
    root, _, image_path = checkpoints
    semantic = save_checkpoint(
        {"model": {"w": torch.zeros(1)}, "model_config": {"name": "realtime_fapn"}}, root / "semantic.pt"
    )
    base = ["compare", str(image_path), "--out", str(root / "refused")]
    assert main([*base, "--weights", str(root / "fpn.pt"), str(semantic)]) == 2
    assert "cannot compare instance and semantic segmentation checkpoints" in capsys.readouterr().err
    assert main([*base, "--weights", str(root / "fapn.pt"), "--gt", str(image_path)]) == 2
    assert "--gt is for semantic label maps" in capsys.readouterr().err
