"""``fapn score`` equals the official Cityscapes evaluator (cityscapesscripts) on a generated fixture, and
``fapn eval --save-predictions`` writes exactly the submission format it reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.cli.main import main
from fapn.data.cityscapes import CITYSCAPES_LABEL_TO_TRAIN

CITIES = {"frankfurt": 2, "lindau": 1}
EVAL_LABEL_IDS = [i for i, t in CITYSCAPES_LABEL_TO_TRAIN.items() if t != 255]


def make_fixture(root: Path, height: int = 48, width: int = 64) -> list[Path]:
    rng = np.random.default_rng(0)
    gts = []
    for city, count in CITIES.items():
        for i in range(count):
            stem = f"{city}_000000_{i:06d}"
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            (root / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
            # Blocky ground truth over all 34 label ids (ignored ones included), like real annotations.
            label = np.kron(rng.integers(0, 34, (height // 8, width // 8)), np.ones((8, 8), dtype=np.int64))
            gt = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label.astype(np.uint8)).save(gt)
            gts.append(gt)
    return gts


def official_miou(ev, predictions: list[Path], gts: list[Path]) -> tuple[float, dict[str, float]]:
    result = ev.evaluateImgLists([str(p) for p in predictions], [str(g) for g in gts], ev.args)
    return result["averageScoreClasses"] * 100, {k: v * 100 for k, v in result["classScores"].items()}


def score_json(capsys, gt_root: Path, pred: Path) -> dict:
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                "--dataset",
                "cityscapes",
                "--gt-root",
                str(gt_root),
                "--split",
                "val",
                "--pred",
                str(pred),
                "--json",
            ]
        )
        == 0
    )
    return json.loads(capsys.readouterr().out)


def test_score_equals_cityscapesscripts(tmp_path: Path, capsys, cityscapes_scripts) -> None:
    ev = cityscapes_scripts
    gts = make_fixture(tmp_path / "cityscapes")
    rng = np.random.default_rng(1)
    pred_dir = tmp_path / "pred"
    (pred_dir / "nested").mkdir(parents=True)
    predictions = []
    for gt in gts:
        label = np.array(Image.open(gt))
        noise = rng.integers(0, 34, label.shape)  # includes label ids not evaluated (0-6, 9, 10, ...)
        pred = np.where(rng.random(label.shape) < 0.5, label, noise).astype(np.uint8)
        pred[pred == 33] = 26  # bicycle never predicted, car over-predicted
        path = pred_dir / "nested" / gt.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
        Image.fromarray(pred).save(path)
        predictions.append(path)
    ours = score_json(capsys, tmp_path / "cityscapes", pred_dir)
    official, per_class = official_miou(ev, predictions, gts)
    assert ours["mIoU"] == pytest.approx(official, abs=1e-4)
    for name, value in per_class.items():
        if not np.isnan(value):
            assert ours["per_class_iou"][name] == pytest.approx(value, abs=1e-4), name


def test_eval_save_predictions_is_the_submission_format(tmp_path: Path, capsys, cityscapes_scripts) -> None:
    ev = cityscapes_scripts
    from fapn.checkpoint import save_checkpoint
    from fapn.data.cityscapes import CITYSCAPES_INFO
    from fapn.models import realtime_fapn

    gts = make_fixture(tmp_path / "cityscapes")
    torch.manual_seed(0)
    model = realtime_fapn("resnet18", num_classes=19, neck="fpn")
    ckpt = save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": {"name": "realtime_fapn", "backbone": "resnet18", "num_classes": 19, "neck": "fpn"},
            "dataset": CITYSCAPES_INFO.to_dict(),
        },
        tmp_path / "model.pt",
    )
    pred_dir = tmp_path / "preds"
    assert (
        main(
            [
                "eval",
                "semseg/cityscapes_r18_fapn",
                "--weights",
                str(ckpt),
                "--set",
                f"data.root={tmp_path / 'cityscapes'}",
                "--save-predictions",
                str(pred_dir),
                "--output",
                str(tmp_path / "eval.json"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    files = sorted(pred_dir.glob("*.png"))
    assert [f.name for f in files] == sorted(g.name.replace("_gtFine_labelIds", "_leftImg8bit") for g in gts)
    for f in files:
        array = np.array(Image.open(f))
        assert array.shape == (48, 64) and array.dtype == np.uint8
        assert set(np.unique(array)) <= set(EVAL_LABEL_IDS)  # label ids, not train ids
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    scored = score_json(capsys, tmp_path / "cityscapes", pred_dir)
    official, _ = official_miou(ev, [pred_dir / g.name.replace("_gtFine_labelIds", "_leftImg8bit") for g in gts], gts)
    assert evaluated["mIoU"] == pytest.approx(scored["mIoU"], abs=1e-9)
    assert scored["mIoU"] == pytest.approx(official, abs=1e-4)


def test_score_errors_name_the_file(tmp_path: Path, capsys) -> None:
    gts = make_fixture(tmp_path / "cityscapes")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    code = main(
        ["score", "--dataset", "cityscapes", "--gt-root", str(tmp_path / "cityscapes"), "--pred", str(pred_dir)]
    )
    assert code == 2 and "no prediction for frankfurt_000000_000000" in capsys.readouterr().err
    for gt in gts:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred_dir / gt.name.replace("_gtFine_labelIds", ""))
    code = main(
        ["score", "--dataset", "cityscapes", "--gt-root", str(tmp_path / "cityscapes"), "--pred", str(pred_dir)]
    )
    assert code == 2 and "full resolution" in capsys.readouterr().err


def test_score_index_pngs_for_other_datasets(tmp_path: Path, capsys) -> None:
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "val").mkdir(parents=True, exist_ok=True)
        (root / "valannot").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "val" / f"{name}.png")
        Image.fromarray(np.full((8, 8), 3, np.uint8)).save(root / "valannot" / f"{name}.png")
        (tmp_path / "pred").mkdir(exist_ok=True)
        pred = np.full((8, 8), 3, np.uint8)
        pred[:2] = 4
        Image.fromarray(pred).save(tmp_path / "pred" / f"{name}.png")
    assert (
        main(["score", "--dataset", "camvid", "--gt-root", str(root), "--pred", str(tmp_path / "pred"), "--json"]) == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert scores["per_class_iou"]["Road"] == pytest.approx(75.0)
    assert scores["mIoU"] == pytest.approx((75.0 + 0.0) / 2)


def _camvid_like(tmp_path: Path, gt: np.ndarray, pred: np.ndarray) -> tuple[Path, Path]:
    root, pred_dir = tmp_path / "camvid", tmp_path / "pred"
    for folder in (root / "val", root / "valannot", pred_dir):
        folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*gt.shape, 3), np.uint8)).save(root / "val" / "a.png")
    Image.fromarray(gt.astype(np.uint8)).save(root / "valannot" / "a.png")
    Image.fromarray(pred.astype(np.uint8)).save(pred_dir / "a.png")
    return root, pred_dir


def test_score_default_boundary_width_is_the_recipes(tmp_path: Path, capsys) -> None:
    from fapn.config import load_config
    from fapn.engine.semseg.config import SegmentationConfig
    from fapn.metrics import DEFAULT_BOUNDARY_WIDTH, BoundaryConfusionMatrix

    gt = np.zeros((16, 16), np.int64)
    gt[:, 8:] = 3
    pred = np.roll(gt, 1, axis=1)
    root, pred_dir = _camvid_like(tmp_path, gt, pred)
    assert main(["score", "--dataset", "camvid", "--gt-root", str(root), "--pred", str(pred_dir), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["boundary"]["width"] == DEFAULT_BOUNDARY_WIDTH == 2
    assert load_config("semseg/camvid_r18_fapn", SegmentationConfig).eval.boundary_width == DEFAULT_BOUNDARY_WIDTH
    assert BoundaryConfusionMatrix(11).width == DEFAULT_BOUNDARY_WIDTH
    # the band at width 2 around the edge at x=8 is columns 6..9: an independent count of its IoU for class 0
    band = np.zeros_like(gt, bool)
    band[:, 6:10] = True
    tp = ((pred == 0) & (gt == 0) & band).sum()
    union = (((pred == 0) | (gt == 0)) & band).sum()
    assert scores["boundary"]["per_class_iou"]["Sky"] == pytest.approx(100 * tp / union)


def test_score_warns_when_the_top_classes_are_never_predicted(tmp_path: Path, capsys) -> None:
    # ground truth uses all 11 CamVid classes, the predictions only 0..7: an 8-class model
    gt = np.arange(11).repeat(4)[None].repeat(8, axis=0)
    pred = np.minimum(gt, 7)
    root, pred_dir = _camvid_like(tmp_path, gt, pred)
    assert main(["score", "--dataset", "camvid", "--gt-root", str(root), "--pred", str(pred_dir)]) == 0
    err = capsys.readouterr().err
    assert "fapn: warning: the predictions use classes 0..7 only, but the ground truth has 11 classes" in err
    assert "trained with 8 classes instead of 11" in err
    Image.fromarray(gt.astype(np.uint8)).save(pred_dir / "a.png")  # every class predicted: no warning
    assert main(["score", "--dataset", "camvid", "--gt-root", str(root), "--pred", str(pred_dir), "--json"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and json.loads(out.out)["class_count_warning"] is None


def test_predict_output_feeds_score(tmp_path: Path, capsys) -> None:
    # `fapn predict` writes NAME_label.png beside NAME_color.png, NAME_overlay.png and legend.png; `fapn score`
    # reads NAME_label.png as it reads NAME.png, and scores the same as `fapn eval --save-predictions` names
    from fapn.checkpoint import save_checkpoint
    from fapn.models import realtime_fapn

    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for name in ("0001TP_1", "0001TP_2"):
        for folder in ("val", "valannot"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "val" / f"{name}.png")
        Image.fromarray(rng.integers(0, 11, (32, 48), dtype=np.uint8)).save(root / "valannot" / f"{name}.png")
    torch.manual_seed(0)
    model = realtime_fapn(backbone="resnet18", num_classes=11, neck="fpn")
    torch.nn.init.normal_(model.head[3].weight, std=0.3)
    weights = save_checkpoint(
        {"model": model.state_dict(), "model_config": {"name": "realtime_fapn", "num_classes": 11, "neck": "fpn"}},
        tmp_path / "model.pt",
    )
    assert main(["predict", str(root / "val"), "--weights", str(weights), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "0001TP_1_label.png").is_file() and (tmp_path / "pred" / "legend.png").is_file()
    capsys.readouterr()
    args = ["score", "--dataset", "camvid", "--gt-root", str(root), "--json"]
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 0
    from_predict = json.loads(capsys.readouterr().out)
    same = tmp_path / "renamed"
    same.mkdir()
    for name in ("0001TP_1", "0001TP_2"):
        (same / f"{name}.png").write_bytes((tmp_path / "pred" / f"{name}_label.png").read_bytes())
    assert main([*args, "--pred", str(same)]) == 0
    assert from_predict == json.loads(capsys.readouterr().out)
    assert from_predict["num_images"] == 2
    # both names for one image: which one is meant is not guessed
    (tmp_path / "pred" / "0001TP_1.png").write_bytes((same / "0001TP_1.png").read_bytes())
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 2
    assert "two predictions for 0001TP_1" in capsys.readouterr().err


def test_score_says_predict_output_is_not_a_cityscapes_submission(tmp_path: Path, capsys) -> None:
    gts = make_fixture(tmp_path / "cityscapes")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for gt in gts:  # what `fapn predict` writes for a Cityscapes image: train ids, under NAME_label.png
        stem = gt.name.replace("_gtFine_labelIds.png", "_leftImg8bit")
        for kind in ("label", "color", "overlay"):
            Image.fromarray(np.zeros((48, 64), np.uint8)).save(pred_dir / f"{stem}_{kind}.png")
    code = main(
        ["score", "--dataset", "cityscapes", "--gt-root", str(tmp_path / "cityscapes"), "--pred", str(pred_dir)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "fapn predict" in err and "--save-predictions" in err, err
