"""Cityscapes IoU and iIoU for classes and categories equal cityscapesscripts' on a fixture with instances,
directly and through ``fapn score --dataset cityscapes``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fapn.cli.main import main
from fapn.metrics.cityscapes import CityscapesEvaluator, format_cityscapes

INSTANCE_IDS = [24, 25, 26, 27, 28, 29, 30, 31, 32, 33]  # person ... bicycle, caravan (29) and trailer (30) too


def make_fixture(root: Path, height: int = 48, width: int = 64, instances: bool = True) -> list[Path]:
    """Blocky label ids over all 34 ids; blocks of instance classes are instances (``id * 1000 + k``), except
    every third one, left as a group region (instance id = label id), as Cityscapes does for crowds."""
    rng = np.random.default_rng(0)
    gts = []
    for city, count in {"frankfurt": 2, "lindau": 1}.items():
        for i in range(count):
            stem = f"{city}_000000_{i:06d}"
            (root / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
            )
            blocks = rng.integers(0, 34, (height // 8, width // 8))
            blocks = np.where(rng.random(blocks.shape) < 0.4, rng.choice(INSTANCE_IDS, size=blocks.shape), blocks)
            label = np.kron(blocks, np.ones((8, 8), dtype=np.int64))
            instance_blocks = blocks.copy()
            for k, (y, x) in enumerate(zip(*np.nonzero(np.isin(blocks, INSTANCE_IDS)))):
                if k % 3:
                    instance_blocks[y, x] = blocks[y, x] * 1000 + k
            instance = np.kron(instance_blocks, np.ones((8, 8), dtype=np.int64))
            instance[:3, :5] = np.where(instance[:3, :5] > 1000, instance[:3, :5] + 1, instance[:3, :5])  # odd sizes
            gt = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label.astype(np.uint8)).save(gt)
            if instances:
                Image.fromarray(instance.astype(np.uint16)).save(str(gt).replace("labelIds", "instanceIds"))
            gts.append(gt)
    return gts


def make_predictions(gts: list[Path], pred_dir: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    pred_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for gt in gts:
        label = np.array(Image.open(gt))
        noise = rng.integers(0, 34, label.shape)  # label ids not evaluated too (0-6, 9, caravan, ...)
        pred = np.where(rng.random(label.shape) < 0.6, label, noise).astype(np.uint8)
        pred[(label == 26) & (rng.random(label.shape) < 0.3)] = 29  # caravan on cars: a vehicle for category iIoU
        path = pred_dir / gt.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
        Image.fromarray(pred).save(path)
        paths.append(path)
    return paths


def official(
    cityscapes_scripts: Any, monkeypatch: pytest.MonkeyPatch, predictions: list[Path], gts: list[Path]
) -> dict:
    ev = cityscapes_scripts
    monkeypatch.setattr(ev.args, "evalInstLevelScore", True)
    return ev.evaluateImgLists([str(p) for p in predictions], [str(g) for g in gts], ev.args)


def assert_equal_to_official(ours: dict, reference: dict) -> None:
    assert ours["classes"]["IoU"] == pytest.approx(reference["averageScoreClasses"] * 100, abs=1e-9)
    assert ours["classes"]["iIoU"] == pytest.approx(reference["averageScoreInstClasses"] * 100, abs=1e-9)
    assert ours["categories"]["IoU"] == pytest.approx(reference["averageScoreCategories"] * 100, abs=1e-9)
    assert ours["categories"]["iIoU"] == pytest.approx(reference["averageScoreInstCategories"] * 100, abs=1e-9)
    for group, key, scores, inst_scores in (
        ("classes", "per_class", "classScores", "classInstScores"),
        ("categories", "per_category", "categoryScores", "categoryInstScores"),
    ):
        for name, value in reference[scores].items():
            if math.isnan(value):
                assert name not in ours[group][key] or math.isnan(ours[group][key][name]["IoU"]), name
            else:
                assert ours[group][key][name]["IoU"] == pytest.approx(value * 100, abs=1e-9), name
        for name, value in reference[inst_scores].items():
            if not math.isnan(value):
                assert ours[group][key][name]["iIoU"] == pytest.approx(value * 100, abs=1e-9), name


def test_evaluator_equals_cityscapesscripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cityscapes_scripts: Any
) -> None:
    gts = make_fixture(tmp_path / "cityscapes")
    predictions = make_predictions(gts, tmp_path / "pred")
    evaluator = CityscapesEvaluator()
    for prediction, gt in zip(predictions, gts):
        evaluator.update_files(prediction, gt)
    ours = evaluator.compute()
    reference = official(cityscapes_scripts, monkeypatch, predictions, gts)
    assert not math.isnan(reference["averageScoreInstCategories"])
    assert_equal_to_official(ours, reference)
    assert ours["num_images"] == 3
    assert "iIoU class" in format_cityscapes(ours)


def test_score_cli_prints_the_four_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, cityscapes_scripts: Any
) -> None:
    gts = make_fixture(tmp_path / "cityscapes")
    predictions = make_predictions(gts, tmp_path / "pred" / "nested")
    reference = official(cityscapes_scripts, monkeypatch, predictions, gts)
    capsys.readouterr()
    argv = ["score", "--dataset", "cityscapes", "--gt-root", str(tmp_path / "cityscapes"), "--split", "val"]
    argv += ["--pred", str(tmp_path / "pred")]
    assert main([*argv, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert_equal_to_official(scores["cityscapes"], reference)
    assert scores["mIoU"] == pytest.approx(reference["averageScoreClasses"] * 100, abs=1e-4)
    assert main(argv) == 0
    assert "iIoU category" in capsys.readouterr().out


def test_without_instance_files_iiou_is_not_reported(tmp_path: Path) -> None:
    gts = make_fixture(tmp_path / "cityscapes", instances=False)
    predictions = make_predictions(gts, tmp_path / "pred")
    evaluator = CityscapesEvaluator()
    for prediction, gt in zip(predictions, gts):
        evaluator.update_files(prediction, gt)
    scores = evaluator.compute()
    assert scores["classes"]["iIoU"] is None and scores["categories"]["iIoU"] is None
    assert scores["classes"]["IoU"] > 0
    assert "iIoU class n/a" in format_cityscapes(scores)


def test_bad_input_is_a_clear_error() -> None:
    evaluator = CityscapesEvaluator()
    with pytest.raises(ValueError, match="label id"):
        evaluator.update(np.full((2, 2), 40), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="ground truth"):
        evaluator.update(np.zeros((2, 3)), np.zeros((2, 2)))
