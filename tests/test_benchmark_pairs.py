"""The CamVid pair benchmarks' shared runner (benchmarks/pairs.py): commands, collection and the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def pairs():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pairs

        yield pairs
    finally:
        sys.path.remove(str(BENCHMARKS))


def fake_run(folder: Path, miou: float, pole: float, wall: float, command: str = "python bench.py") -> None:
    folder.mkdir(parents=True)
    metrics = {
        "mIoU": miou,
        "pixel_accuracy": 90.0,
        "per_class_iou": {"Sky": 91.25, "Pole": pole},
        "boundary": {"mIoU": miou / 2, "width": 2, "per_class_iou": {"Sky": 60.0, "Pole": None}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "benchmark.json").write_text(json.dumps({"wall_seconds": wall, "command": command}))


def test_train_command_puts_user_overrides_last(pairs) -> None:
    model = pairs.Model("R18 X", "semseg/camvid_r18_fapn", ("model.name=pointrend_semantic",))
    args = pairs.parse_args("doc", {"x": model}, iterations=7, eval_period=0, output="/o", argv=["--set", "a=1"])
    command = pairs.train_command(args, "x", model)
    sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    assert sets[0] == "model.name=pointrend_semantic" and sets[-1] == "a=1"
    assert "train.iterations=7" in sets and "train.eval_period=0" in sets
    assert command[command.index("--output-dir") + 1] == str(Path("/o") / "x") and "--overwrite" in command


def test_old_option_names_still_select_models(pairs) -> None:
    models = {"fpn": pairs.Model("A", "r"), "fapn": pairs.Model("B", "r")}
    for flag in ("--models", "--necks", "--variants"):
        args = pairs.parse_args("doc", models, iterations=1, eval_period=0, output="/o", argv=[flag, "fapn"])
        assert args.models == ["fapn"]


def test_report_merges_runs_of_separate_invocations(pairs, tmp_path: Path, monkeypatch, capsys) -> None:
    models = {"fpn": pairs.Model("R18 FPN", "r"), "fapn": pairs.Model("R18 FaPN", "r")}
    fake_run(tmp_path / "fapn", 52.25, 7.5, 600.0, "python bench.py --models fapn")
    fake_run(tmp_path / "fpn", 50.0, 0.0, 300.0, "python bench.py --models fpn")
    (tmp_path / "unfinished").mkdir()
    monkeypatch.setattr(sys, "argv", ["bench.py", "--report", "--output", str(tmp_path)])
    code = pairs.main("doc", models, iterations=1, eval_period=0, output="/o", extra=lambda: ({"n": 3}, ["more"]))
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[1:3] == ["python bench.py --models fpn", "python bench.py --models fapn"]  # the models' order
    assert "| R18 FPN | 5.0 min | 50.0 | 90.0 | 25.0 (2 px) |" in lines
    assert "| R18 FaPN | 10.0 min | 52.2 | 90.0 | 26.1 (2 px) |" in lines
    assert "| class | R18 FPN IoU | R18 FaPN IoU | R18 FPN bIoU | R18 FaPN bIoU |" in lines
    assert "| Pole | 0.0 | 7.5 | - | - |" in lines and lines[-1] == "more"
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["runs"]) == ["fpn", "fapn"] and results["n"] == 3


def test_report_without_runs_is_an_error(pairs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.py", "--report", "--output", str(tmp_path)])
    assert pairs.main("doc", {"a": pairs.Model("A", "r")}, iterations=1, eval_period=0, output="/o") == 1
