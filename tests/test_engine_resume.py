"""Training engine: exact resume, checkpoint contract, logs and the loss normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
from fapn.config import load_config
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.loss import segmentation_loss
from fapn.engine.semseg.train import train

TINY = [
    "train.iterations=20",
    "train.batch_size=2",
    "train.eval_period=0",
    "train.checkpoint_period=5",
    "train.log_period=5",
    "train.threads=2",
    "data.crop_size=[32,32]",
    "data.scales=[1.0,1.5]",
    "data.options={size: [40, 48], num_images: 6}",
    "data.val_options={num_images: 2}",
    "model.neck=fpn+fam",
    "optim.warmup_iters=3",
    "train.device=cpu",
]


def tiny_config(*extra: str) -> SegmentationConfig:
    return load_config("semseg/synthetic_r18_fapn", SegmentationConfig, [*TINY, *extra])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    train(tiny_config(), output_dir=out, progress=False)
    return out


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(straight_run: Path, tmp_path: Path) -> None:
    result = train(tiny_config(), output_dir=tmp_path, progress=False, stop_after=10)
    assert result["iteration"] == 10
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 10
    train(tiny_config(), output_dir=tmp_path, resume=True, progress=False)
    a, b = load_checkpoint(straight_run / "last.pt"), load_checkpoint(tmp_path / "last.pt")
    assert a["iteration"] == b["iteration"] == 20
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 20


def test_checkpoint_follows_the_contract(straight_run: Path) -> None:
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(straight_run / name)  # weights_only=True: plain data
        assert ckpt["model_config"] == {
            "name": "realtime_fapn",
            "backbone": "resnet18",
            "num_classes": 8,
            "neck": "fpn+fam",
        }
        dataset = ckpt["dataset"]
        assert dataset["class_names"][5] == "pole" and dataset["ignore_index"] == 255
        assert len(dataset["palette"]) == 8 and len(dataset["mean"]) == len(dataset["std"]) == 3
        assert {"optimizer", "scheduler", "iteration", "rng", "config", "metrics"} <= set(ckpt)
        model = build_model_from_checkpoint(ckpt).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 8, 32, 32)
    metrics = json.loads((straight_run / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 100 and "boundary" in metrics and len(metrics["per_class_iou"]) == 8
    records = [json.loads(line) for line in (straight_run / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "train" in r]
    assert [r["iteration"] for r in train_records] == [5, 10, 15, 20]
    lrs = [r["train"]["lr"] for r in train_records]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.02  # poly decay
    assert (straight_run / "tensorboard").is_dir()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(tiny_config(), output_dir=tmp_path, resume=True, progress=False)


def test_loss_is_the_mean_over_labelled_pixels() -> None:
    logits = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0] = 255
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, target, 255).double(), expected, rtol=1e-6, atol=1e-6)
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    expected = torch.nn.functional.cross_entropy(logits.float(), target, weight=weights, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, target, 255, weights), expected)


def test_bf16_autocast_on_cpu_trains_with_float32_weights(tmp_path: Path) -> None:
    result = train(
        tiny_config("train.amp=true", "train.iterations=2", "model.neck=fapn"), output_dir=tmp_path, progress=False
    )
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["train"]["loss"] for r in records if "train" in r]
    assert losses and all(0 < loss < 10 for loss in losses)
    assert result["metrics"]["mIoU"] is not None


@pytest.mark.slow
def test_log_after_kill_and_resume_has_one_record_per_iteration(tmp_path: Path) -> None:
    import shutil

    short = ("train.log_period=1", "train.iterations=6", "train.checkpoint_period=2")
    train(tiny_config(*short), output_dir=tmp_path, progress=False, stop_after=2)
    shutil.copy(tmp_path / "last.pt", tmp_path / "at2.pt")
    train(tiny_config(*short), output_dir=tmp_path, resume=True, progress=False, stop_after=4)
    logged = (tmp_path / "log.jsonl").read_text().splitlines()
    # killed after iteration 4 with the last checkpoint at 2 (kill -9 between checkpoints): iterations 3 and 4
    # are in the log and will run again
    shutil.move(tmp_path / "at2.pt", tmp_path / "last.pt")
    with (tmp_path / "log.jsonl").open("a") as handle:
        handle.write('{"iteration": 5, "train": {"lo')  # a line cut by the kill
    train(tiny_config(*short), output_dir=tmp_path, resume=True, progress=False)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iteration"] for r in records if "train" in r] == [1, 2, 3, 4, 5, 6]
    assert lines[:2] == logged[:2]  # the records before the checkpoint are kept as they were
    assert [json.loads(line)["train"]["loss"] for line in logged[2:4]] == [r["train"]["loss"] for r in records[2:4]]
