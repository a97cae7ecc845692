"""Unreadable data found before training: the header check at start-up, ``fapn train --check-data``, and
the skip-and-report mode (``data.skip_unreadable``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn.cli.main import main
from fapn.config import load_config
from fapn.data.folder import image_folder
from fapn.data.scan import check_files, check_headers, without_samples
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.train import train

RECIPE = "semseg/synthetic_r18_fapn"


def _dataset(root: Path, n_train: int = 5) -> Path:
    """A folder dataset of ``n_train`` + 1 small images with 3 classes."""
    rng = np.random.default_rng(0)
    (root / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("classes: [a, b, c]\n")
    for split, count in (("train", n_train), ("val", 1)):
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(root / f"images/{split}/{i}.png")
            Image.fromarray(rng.integers(0, 3, (32, 40), dtype=np.uint8)).save(root / f"masks/{split}/{i}.png")
    return root


def _break(root: Path) -> dict[str, Path]:
    """Three kinds of bad file: not an image at all, a truncated image (a valid header), a label of the wrong size."""
    garbage = root / "images/train/1.png"
    garbage.write_bytes(b"not a png at all")
    truncated = root / "images/train/2.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    wrong_size = root / "masks/train/3.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(wrong_size)
    return {"garbage": garbage, "truncated": truncated, "wrong_size": wrong_size}


def _overrides(root: Path) -> list[str]:
    return [
        "data.dataset=folder",
        f"data.root={root}",
        "data.options={}",
        "data.val_options={}",
        "data.crop_size=[32,32]",
        "data.scales=[1.0]",
        "train.iterations=2",
        "train.batch_size=2",
        "train.eval_period=0",
        "train.checkpoint_period=2",
        "train.log_period=1",
        "train.threads=1",
        "train.device=cpu",
        "model.neck=fpn",
        "optim.warmup_iters=0",
    ]


def test_header_check_and_full_check(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    bad = _break(root)
    dataset = image_folder(root, "train")
    headers = {b.path: b for b in check_headers(dataset)}
    assert set(headers) == {bad["garbage"], bad["wrong_size"]}  # a truncated file has a valid header
    assert "unreadable image" in headers[bad["garbage"]].problem
    assert "label is 16x16 but image" in headers[bad["wrong_size"]].problem
    full = check_files(dataset)
    assert {b.path for b in full} == set(bad.values())
    assert {b.index for b in full} == {1, 2, 3}
    kept = without_samples(dataset, full)
    assert len(kept) == 2 and len(dataset) == 5  # a copy: the dataset itself is untouched
    assert all(str(b.path) in str(b) for b in full)


def test_training_stops_at_start_up_naming_every_bad_header(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    bad = _break(root)
    cfg = load_config(RECIPE, SegmentationConfig, _overrides(root))
    with pytest.raises(ValueError, match="2 unreadable file") as info:
        train(cfg, output_dir=tmp_path / "run", progress=False)
    message = str(info.value)
    assert str(bad["garbage"]) in message and str(bad["wrong_size"]) in message
    assert "data.skip_unreadable=true" in message
    assert not (tmp_path / "run" / "last.pt").exists()


def test_check_data_lists_every_bad_file_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "data")
    argv = [
        "train",
        RECIPE,
        *[arg for o in _overrides(root) for arg in ("--set", o)],
        "--output-dir",
        str(tmp_path / "run"),
        "--check-data",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "every file reads" in capsys.readouterr().out
    bad = _break(root)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert all(str(path) in out for path in bad.values()) and "3 unreadable file(s)" in out
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_skip_unreadable_trains_without_them_and_lists_them(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "data")
    bad = _break(root)
    argv = [
        "train",
        RECIPE,
        *[arg for o in _overrides(root) for arg in ("--set", o)],
        "--output-dir",
        str(tmp_path / "run"),
        "--skip-unreadable",
        "--no-progress",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    listing = (tmp_path / "run" / "skipped_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in listing) == sorted(str(p) for p in bad.values())
    assert all(line.startswith("train\t") for line in listing)
    assert "skipping 3 unreadable train sample(s)" in captured.err
    assert "2 images, 3 classes" in captured.out and "3 unreadable skipped" in captured.out


@pytest.mark.slow
def test_a_file_that_breaks_mid_run_stops_it_by_name_and_resume_skips_it(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "data")
    truncated = root / "images/train/2.png"  # a valid header: only decoding it fails, during training
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run = tmp_path / "run"
    overrides = [*_overrides(root), "train.iterations=6", "train.checkpoint_period=1"]
    argv = [
        "train",
        RECIPE,
        *[arg for o in overrides for arg in ("--set", o)],
        "--output-dir",
        str(run),
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(truncated) in err and "training stopped at iteration" in err and "data.skip_unreadable=true" in err
    stopped_at = int(err.split("training stopped at iteration ")[1].split()[0])
    before = (run / "last.pt").read_bytes() if stopped_at else None
    assert main([*argv, "--resume", "--skip-unreadable"]) == 0
    assert f"resumed from iteration {stopped_at} of 6" in capsys.readouterr().out
    assert (run / "skipped_files.txt").read_text().startswith(f"train\t{truncated}\t")
    from fapn.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt")["iteration"] == 6 and before != (run / "last.pt").read_bytes()
