"""The run-folder rules of ``fapn train``: no run overwritten by accident, ``--resume`` from the saved
recipe with conflicting ``--set`` refused, the start-up summary, logs without carriage returns, typed recipes
checked before any data is read, and ``fapn eval``'s threads and class-count warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from fapn.cli.main import main
from fapn.config import load_config
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.train import train

RECIPE = "semseg/synthetic_r18_fapn"
TINY = [
    "train.iterations=4",
    "train.batch_size=2",
    "train.eval_period=0",
    "train.checkpoint_period=2",
    "train.log_period=1",
    "train.threads=1",
    "data.crop_size=[32,32]",
    "data.scales=[1.0]",
    "data.options={size: [32, 40], num_images: 4}",
    "data.val_options={num_images: 1}",
    "model.neck=fpn",
    "optim.warmup_iters=0",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def half_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after 2 of its 4 iterations (last.pt at iteration 2)."""
    out = tmp_path_factory.mktemp("half")
    cfg = load_config(RECIPE, SegmentationConfig, TINY)
    train(cfg, output_dir=out, progress=False, stop_after=2)
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _fapn(*argv: str) -> int:
    return main(list(argv))


def test_training_into_a_folder_with_a_run_refuses_and_loses_nothing(half_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(half_run, tmp_path / "run")
    before = (run / "last.pt").read_bytes()
    code = _fapn(
        "train", RECIPE, *[arg for o in TINY for arg in ("--set", o)], "--output-dir", str(run), "--no-progress"
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{run} already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="already holds a run"):
        train(load_config(RECIPE, SegmentationConfig, TINY), output_dir=run, progress=False)
    assert (run / "last.pt").read_bytes() == before


def test_overwrite_replaces_the_run(half_run: Path, tmp_path: Path) -> None:
    run = _copy_run(half_run, tmp_path / "run")
    (run / "notes.txt").write_text("mine")  # not a run file: kept
    cfg = load_config(RECIPE, SegmentationConfig, [*TINY, "train.iterations=1"])
    result = train(cfg, output_dir=run, progress=False, overwrite=True)
    assert result["iteration"] == 1 and load_checkpoint(run / "last.pt")["iteration"] == 1
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "train" in r] == [1]  # the old log is gone, not appended to
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="give one of them"):
        train(cfg, output_dir=run, progress=False, overwrite=True, resume=True)


def test_resume_uses_the_saved_recipe_and_refuses_a_conflicting_set(half_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(half_run, tmp_path / "run")
    before = (run / "last.pt").read_bytes()
    # a different neck, a different length, a different learning rate: each named, nothing written
    for override, key in (
        ("model.neck=fapn", "model.neck"),
        ("train.iterations=8", "train.iterations"),
        ("optim.lr=0.5", "optim.lr"),
    ):
        code = _fapn("train", RECIPE, "--output-dir", str(run), "--resume", "--set", override)
        err = capsys.readouterr().err
        assert code == 2, override
        assert f"cannot resume {run / 'last.pt'} with {key}=" in err and "the run was trained with" in err
        assert (run / "last.pt").read_bytes() == before
    # no --set repeated (the shipped recipe differs from the saved one in many keys): the saved recipe is used;
    # a --set equal to the saved value and a runtime key are fine
    code = _fapn(
        "train",
        RECIPE,
        "--output-dir",
        str(run),
        "--resume",
        "--no-progress",
        "--set",
        "model.neck=fpn",
        "--threads",
        "1",
        "--set",
        "train.log_period=2",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "resumed from iteration 2 of 4" in out and str(run) in out and "1 CPU thread" in out
    assert "\r" not in out
    assert load_checkpoint(run / "last.pt")["iteration"] == 4


def test_resume_from_a_truncated_checkpoint_names_the_file(half_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(half_run, tmp_path / "run")
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])
    assert _fapn("train", RECIPE, "--output-dir", str(run), "--resume") == 2
    err = capsys.readouterr().err
    assert f"{run / 'last.pt'}: cannot read it as a checkpoint" in err and "truncated" in err
    # weights without training state (a model_final.pt copied over last.pt) cannot be resumed either
    save_checkpoint({"model": {}, "model_config": {"name": "realtime_fapn"}}, run / "last.pt")
    assert _fapn("train", RECIPE, "--output-dir", str(run), "--resume") == 2
    assert "no training state" in capsys.readouterr().err


def test_resume_without_a_run_and_a_different_neck_in_python(half_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(load_config(RECIPE, SegmentationConfig, TINY), output_dir=tmp_path / "empty", resume=True)
    run = _copy_run(half_run, tmp_path / "run")
    cfg = load_config(RECIPE, SegmentationConfig, [*TINY, "model.neck=fpn+fam"])
    with pytest.raises(ValueError, match=r"model\.neck='fpn\+fam': the run was trained with model\.neck='fpn'"):
        train(cfg, output_dir=run, resume=True, progress=False)


def test_a_run_of_an_earlier_release_with_model_variant_resumes_as_model_neck(
    half_run: Path, tmp_path: Path, capsys
) -> None:
    # last.pt as an earlier release wrote it: model.variant in the saved recipe, variant in model_config
    run = _copy_run(half_run, tmp_path / "run")
    old = load_checkpoint(run / "last.pt")
    old["config"]["model"] = {("variant" if k == "neck" else k): v for k, v in old["config"]["model"].items()}
    old["model_config"] = {("variant" if k == "neck" else k): v for k, v in old["model_config"].items()}
    assert old["config"]["model"]["variant"] == old["model_config"]["variant"] == "fpn"
    save_checkpoint(old, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    # its model.variant='fpn' is model.neck='fpn': another neck is refused, naming model.neck
    cfg = load_config(RECIPE, SegmentationConfig, [*TINY, "model.neck=fapn"])
    refused = r"model\.neck='fapn': the run was trained with model\.neck='fpn'"
    with (
        pytest.warns(FutureWarning, match=r"model\.variant is now model\.neck"),
        pytest.raises(ValueError, match=refused),
    ):
        train(cfg, output_dir=run, resume=True, progress=False)
    assert (run / "last.pt").read_bytes() == before
    # the old --set spelling on the command line, equal to the saved value: the run goes on
    with pytest.warns(FutureWarning, match=r"model\.variant is now model\.neck"):
        code = _fapn(
            "train", RECIPE, "--output-dir", str(run), "--resume", "--no-progress", "--set", "model.variant=fpn"
        )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resumed from iteration 2 of 4" in captured.out
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["iteration"] == 4 and resumed["config"]["model"]["neck"] == "fpn"
    assert "variant" not in resumed["config"]["model"]
    # the old model_config still builds the model (the builder reads variant= as neck=)
    with pytest.warns(FutureWarning, match=r"realtime_fapn\(\): the keyword variant= is now neck="):
        model = build_model_from_checkpoint(old)
    assert model.neck_name == "fpn" and model.fapn_config["neck"] == "fpn" and "variant" not in model.fapn_config


def test_start_up_summary_and_plain_log_lines(tmp_path: Path, capsys) -> None:
    code = _fapn(
        "train",
        RECIPE,
        *[arg for o in TINY for arg in ("--set", o)],
        "--set",
        "train.iterations=1",
        "--output-dir",
        str(tmp_path / "run"),
        "--no-progress",
    )
    captured = capsys.readouterr()
    assert code == 0
    out = captured.out
    assert "fapn train: synthetic_r18_fapn (semseg)" in out
    assert "train:   synthetic train, 4 images, 8 classes" in out and "val:     synthetic val, 1 images" in out
    assert "device:  cpu, 1 CPU thread" in out and f"output:  {tmp_path / 'run'}" in out
    assert "start:   new run, 1 iterations" in out
    assert "iteration 1: train.loss" in out
    assert "\r" not in captured.out + captured.err


def test_closed_choices_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.neck.*'fapm'"):
        load_config(RECIPE, SegmentationConfig, ["model.neck=fapm"])
    for bad in ("optim.loss=focal", "optim.schedule=cosine", "train.device=gpu"):
        with pytest.raises(ValueError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(RECIPE, SegmentationConfig, [bad])
    # a recipe built in Python is checked too, before the (missing) data is touched
    cfg = load_config("semseg/camvid_r18_fapn", SegmentationConfig, [f"data.root={tmp_path / 'nowhere'}"])
    cfg.model.neck = "fapm"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"model\.neck"):
        train(cfg, output_dir=tmp_path / "run", progress=False)
    cfg.model.neck = "fpn"
    cfg.model.name = "unet"
    with pytest.raises(ValueError, match=r"unknown model\.name 'unet'"):
        train(cfg, output_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_model_options_reach_the_builder_and_the_checkpoint(tmp_path: Path) -> None:
    from fapn.engine.semseg.model import model_config_of

    cfg = load_config(RECIPE, SegmentationConfig, ["model.options={channels: 32, head_channels: 16}"])
    config = model_config_of(cfg, 8)
    assert config == {
        "name": "realtime_fapn",
        "backbone": "resnet18",
        "num_classes": 8,
        "neck": "fapn",
        "channels": 32,
        "head_channels": 16,
    }
    cfg = load_config(RECIPE, SegmentationConfig, ["model.options={chanels: 32}"])
    with pytest.raises(ValueError, match=r"model\.options\.chanels: realtime_fapn takes no argument 'chanels'"):
        model_config_of(cfg, 8)


def test_eval_threads_progress_and_class_count_warning(half_run: Path, tmp_path: Path, capsys) -> None:
    before = torch.get_num_threads()
    try:
        code = _fapn(
            "eval",
            RECIPE,
            "--weights",
            str(half_run / "last.pt"),
            "--output",
            str(tmp_path / "e.json"),
            "--set",
            "data.val_options={num_images: 1, size: [32, 40]}",
            "--threads",
            "1",
            "--no-progress",
        )
        captured = capsys.readouterr()
        assert code == 0 and torch.get_num_threads() == 1
        assert "warning" not in captured.err and "\r" not in captured.err + captured.out
        # an 8-class model scored on a 3-class dataset: a warning, and the scores still come
        classes = tmp_path / "classes.yaml"
        classes.write_text("classes: [a, b, c]\n")
        from PIL import Image

        for sub in ("images/val", "masks/val"):
            (tmp_path / "data" / sub).mkdir(parents=True)
        Image.new("RGB", (40, 32)).save(tmp_path / "data/images/val/x.png")
        Image.new("L", (40, 32)).save(tmp_path / "data/masks/val/x.png")
        torch.set_num_threads(2)  # without --threads, the recipe's train.threads applies
        code = _fapn(
            "eval",
            RECIPE,
            "--weights",
            str(half_run / "last.pt"),
            "--output",
            str(tmp_path / "f.json"),
            "--set",
            "train.threads=1",
            "--set",
            "data.dataset=folder",
            "--set",
            f"data.root={tmp_path / 'data'}",
            "--set",
            f"data.options={{classes_file: {classes}}}",
            "--set",
            "data.val_options={}",
            "--no-progress",
        )
        err = capsys.readouterr().err
        assert code == 0 and torch.get_num_threads() == 1
        assert "warning" in err and "predicts 8 classes but" in err and "has 3" in err
        assert "predicts 8 classes" in json.loads((tmp_path / "f.json").read_text())["warning"]
    finally:
        torch.set_num_threads(before)


def test_run_folder_rule_and_rng_state_units(tmp_path: Path) -> None:
    import random

    from fapn.engine.run_dir import prepare_output_dir
    from fapn.engine.trainer import rng_state, set_rng_state

    (tmp_path / "log.jsonl").write_text("{}\n")  # a run that died before its first checkpoint
    with pytest.raises(ValueError, match=r"no last\.pt to --resume from: replace it with --overwrite"):
        prepare_output_dir(tmp_path, resume=False, overwrite=False)
    assert prepare_output_dir(tmp_path, resume=False, overwrite=False, is_main=False) == tmp_path  # rank 0 decides
    prepare_output_dir(tmp_path, resume=False, overwrite=True)
    assert not (tmp_path / "log.jsonl").exists()
    # one RNG format (torch + Python's random), saved as plain data; the older shapes still restore
    state = rng_state()
    path = save_checkpoint({"model": {}, "rng": state}, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random())
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    for old in ({"torch": state["torch"]}, state["torch"]):
        set_rng_state(old)
        assert torch.equal(torch.rand(3), expected[0])


def test_cuda_without_a_gpu_is_one_line_before_any_data(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also checked on a machine with a GPU
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    argv = [
        "train",
        "semseg/camvid_r18_fapn",
        "--set",
        "train.device=cuda",
        "--set",
        f"data.root={tmp_path / 'none'}",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapn: error: train.device=cuda: no CUDA GPU is visible") and err.count("\n") == 1
    assert main(["eval", RECIPE, "--weights", str(tmp_path / "w.pt"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err


def test_eval_without_a_recipe_uses_the_one_stored_in_the_checkpoint(half_run: Path, tmp_path: Path, capsys) -> None:
    # the shipped recipe scores 128x160 images; the run's own recipe (TINY) 1 image of 32x40
    weights = _copy_run(half_run, tmp_path / "run") / "last.pt"
    assert _fapn("eval", "--weights", str(weights), "--threads", "1", "--no-progress") == 0
    scores = json.loads((tmp_path / "run" / "last_eval.json").read_text())
    assert scores["num_pixels"] == 32 * 40
    assert _fapn("eval", "--weights", str(weights), "--set", "data.val_options={num_images: 2}", "--no-progress") == 0
    assert json.loads((tmp_path / "run" / "last_eval.json").read_text())["num_pixels"] == 2 * 32 * 40
    capsys.readouterr()
    save_checkpoint({"model": load_checkpoint(weights)["model"]}, tmp_path / "bare.pt")
    assert _fapn("eval", "--weights", str(tmp_path / "bare.pt")) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapn: error:") and "stores no recipe" in err and err.count("\n") == 1


def test_overwrite_removes_the_eval_scores_of_the_replaced_run(tmp_path: Path) -> None:
    from fapn.engine.run_dir import prepare_output_dir

    for name in ("last.pt", "best.pt", "best_eval.json", "last_eval.json", "model_final_eval.json", "notes.txt"):
        (tmp_path / name).write_text("old")
    prepare_output_dir(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # not a file of the run: kept
