"""``torchrun --nproc_per_node 2 -m fapn train`` on CPU (gloo) reaches the weights of one process with the
same global batch, and its validation metrics are reduced over both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fapn.checkpoint import load_checkpoint
from fapn.config import load_config
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.train import train

RECIPE = """\
task: semseg
name: ddp_test
model: {backbone: resnet18, neck: fapn, frozen_bn: true}
data:
  dataset: synthetic
  crop_size: [32, 32]
  scales: [1.0, 1.25]
  num_workers: 0
  options: {size: [40, 40], num_images: 8}
  val_options: {num_images: 3}
optim: {lr: 0.05, warmup_iters: 0}
train: {batch_size: 4, iterations: 3, eval_period: 0, checkpoint_period: 3, log_period: 1, threads: 1, device: cpu}
"""


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    ddp_out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "fapn",
            "train",
            str(recipe),
            "--output-dir",
            str(ddp_out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    single_out = tmp_path / "single"
    train(load_config(recipe, SegmentationConfig), output_dir=single_out, progress=False)

    ddp, single = load_checkpoint(ddp_out / "last.pt"), load_checkpoint(single_out / "last.pt")
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # The weights did move: the comparison is not between two untouched initialisations.
    from fapn.models import realtime_fapn

    torch.manual_seed(0)
    initial = realtime_fapn("resnet18", num_classes=8, neck="fapn").state_dict()
    change = max(float((single["model"][k].float() - v.float()).abs().max()) for k, v in initial.items())
    assert change > 1e-3
    ddp_metrics = json.loads((ddp_out / "metrics.json").read_text())
    single_metrics = json.loads((single_out / "metrics.json").read_text())
    # Rank 0 alone would have scored 2 of the 3 validation images: the counts prove the reduction.
    assert ddp_metrics["num_pixels"] == single_metrics["num_pixels"] == 3 * 40 * 40
    assert ddp_metrics["mIoU"] == pytest.approx(single_metrics["mIoU"], abs=0.5)
    log = [json.loads(line) for line in (ddp_out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if "train" in r] == [1, 2, 3]  # rank 0 logs once per iteration
    # The logged loss is the mean over the processes, as one process logs it for the same global batch (not one
    # rank's share): curves of 1 and N processes compare.
    single_log = [json.loads(line) for line in (single_out / "log.jsonl").read_text().splitlines()]
    ddp_losses = [r["train"]["loss"] for r in log if "train" in r]
    single_losses = [r["train"]["loss"] for r in single_log if "train" in r]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)
