"""``fapn demo`` with tiny settings: the report folder, its pictures and numbers that a re-evaluation confirms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn.cli.main import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(
            [
                "demo",
                "--output",
                str(out),
                "--iterations",
                "3",
                "--batch-size",
                "2",
                "--image-size",
                "64x96",
                "--train-images",
                "4",
                "--val-images",
                "2",
                "--threads",
                "2",
                "--no-progress",
            ]
        )
    assert code == 0
    return out, buffer.getvalue()


def test_demo_writes_the_report_folder(demo_run) -> None:
    out, stdout = demo_run
    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    assert (out / "fpn" / "last.pt").is_file() and (out / "fapn" / "last.pt").is_file()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pt")) == ["fapn/last.pt", "fpn/last.pt"]
    pictures = sorted(out.glob("comparison_*.png"))
    assert len(pictures) == 2  # min(4 pictures, 2 val images)
    picture = np.asarray(Image.open(pictures[0]).convert("RGB"))
    # image | ground truth | FPN | FaPN at 2x under 20-px titles, then a legend of the classes shown
    width, grid_height = 4 * 96 * 2 + 3 * 4, 20 + 64 * 2
    assert picture.shape[1] == width and picture.shape[0] > grid_height + 4
    assert (picture[:20].max(axis=-1) < 128).any()  # title text
    from fapn.data import SYNTHETIC_INFO, synthetic_streets

    _, target = synthetic_streets(split="val", size=(64, 96), num_images=2)[0]
    legend_part = picture[grid_height + 4 :]
    for index in np.unique(target.numpy()):
        if index != SYNTHETIC_INFO.ignore_index:
            assert np.all(legend_part == SYNTHETIC_INFO.palette[index], axis=-1).sum() >= 144, index
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for neck, label in (("fpn", "FPN"), ("fapn", "FaPN")):
        scores = results[neck]
        assert 0 <= scores["mIoU"] <= 100 and 0 <= scores["boundary"]["mIoU"] <= 100
        assert f"| {label} | {scores['mIoU']:.1f} | {scores['boundary']['mIoU']:.1f} |" in report
        assert f"{label:<6} {scores['mIoU']:7.2f}" in stdout
    assert "comparison_00.png" in report


def test_demo_numbers_match_a_fresh_evaluation_of_its_checkpoints(demo_run) -> None:
    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fapn.data import eval_transforms, synthetic_streets
    from fapn.metrics import ConfusionMatrix

    out, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    val = synthetic_streets(split="val", size=(64, 96), num_images=2, transforms=eval_transforms())
    for neck in ("fpn", "fapn"):
        model = build_model_from_checkpoint(load_checkpoint(out / neck / "last.pt")).eval()
        confusion = ConfusionMatrix(8)
        import torch

        with torch.no_grad():
            for image, mask in (val[0], val[1]):
                confusion.update(model(image.unsqueeze(0)).argmax(1)[0], mask)
        assert confusion.compute()["mIoU"] == pytest.approx(results[neck]["mIoU"], abs=1e-6)
        assert np.isfinite(results[neck]["train_seconds"])


def test_demo_help_explains_the_way_to_real_data(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "fapn train semseg/camvid_r18_fapn" in text and "data.dataset=folder" in text


def _captured_settings(monkeypatch, argv: list[str]):
    """The settings ``fapn demo`` hands to ``run_demo`` for ``argv``, without training anything."""
    import fapn.engine.demo as demo

    class Stop(Exception):
        pass

    seen = []

    def capture(settings):
        seen.append(settings)
        raise Stop

    monkeypatch.setattr(demo, "run_demo", capture)
    with pytest.raises(Stop):
        main(argv)
    return seen[0]


def test_demo_threads_and_old_size_form_reach_each_models_recipe(monkeypatch) -> None:
    # --threads and the older 'H W' size go through DemoSettings into both training recipes (train applies
    # train.threads; see test_engine_runs), checked without training anything
    import fapn.engine.demo as demo

    settings = _captured_settings(monkeypatch, ["demo", "--threads", "1", "--image-size", "64", "96"])
    assert settings.threads == 1 and list(settings.image_size) == [64, 96]
    for neck in ("fpn", "fapn"):
        config = demo.demo_config(settings, neck)
        assert config.train.threads == 1 and config.data.crop_size == [64, 96]


def test_demo_device_reaches_each_models_recipe(monkeypatch, capsys) -> None:
    import fapn.engine.demo as demo

    settings = _captured_settings(monkeypatch, ["demo", "--device", "cpu"])
    assert settings.device == "cpu"
    assert {demo.demo_config(settings, v).train.device for v in ("fpn", "fapn")} == {"cpu"}
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    assert main(["demo", "--device", "cuda"]) == 2  # checked before anything trains
    assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err


def test_demo_says_when_torchs_cuda_build_runs_on_a_cpu(monkeypatch, capsys) -> None:
    import torch

    import fapn.engine.demo  # noqa: F401 - imports torchvision, which checks torch.version.cuda, before the patch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    _captured_settings(monkeypatch, ["demo"])
    err = capsys.readouterr().err
    assert (
        "CUDA build" in err and "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in err
    )
    monkeypatch.setattr(torch.version, "cuda", None)  # the CPU build: nothing to say
    _captured_settings(monkeypatch, ["demo"])
    assert "CUDA build" not in capsys.readouterr().err
    from fapn.runtime import CPU_INSTALL

    assert CPU_INSTALL in (Path(__file__).parents[1] / "README.md").read_text()  # the line the note names is there


def test_eval_of_a_demo_checkpoint_without_a_recipe_gives_the_demos_numbers(demo_run, tmp_path, capsys) -> None:
    # the recipe the checkpoint stores is the demo's (its synthetic scenes), not semseg/synthetic_r18_fapn's
    out, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    output = tmp_path / "fapn_eval.json"
    assert main(["eval", "--weights", str(out / "fapn" / "last.pt"), "--output", str(output), "--no-progress"]) == 0
    assert json.loads(output.read_text())["mIoU"] == pytest.approx(results["fapn"]["mIoU"], abs=1e-6)
