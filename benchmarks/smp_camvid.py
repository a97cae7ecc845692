"""CamVid: segmentation_models_pytorch's FPN vs ``fapn.smp.FaPN``, ResNet-18 from scratch, the pair benchmark's budget.

Both models are SMP models (SMP's ResNet-18 encoder, random initialisation, SMP's segmentation head); only the
decoder differs: SMP's FPN decoder or fapn's FaPN decoder. They are trained with the recipe of
``semseg/camvid_r18_fapn`` (the CamVid pair benchmark, ``benchmarks/camvid.py``: 500 iterations of batch 8,
random-scale crops of 176x240, flips, SGD 0.02 / momentum 0.9 / weight decay 5e-4, poly 0.9 with 50 warmup
iterations, cross-entropy) on fapn's data pipeline and data stream (the seed's batches, as ``fapn train`` draws
them), one model after the other in this process, and evaluated on CamVid val with fapn's evaluation (mIoU,
pixel accuracy, boundary mIoU, per-class IoU). SMP models need sides divisible by 32: images are padded at the
bottom and right to the next multiple of 32 and the logits cropped back (labels are never padded).

Results go to ``--output`` (JSON): per model its parameters, iterations, wall time, the val scores, and this
command line.

Usage:
    python benchmarks/smp_camvid.py --data ../shared/data/camvid-half --output benchmarks/results/smp/camvid.json
    python benchmarks/smp_camvid.py --iterations 5 --val-images 4 --output /tmp/smp_smoke.json   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class PadToMultiple(nn.Module):
    """Run ``model`` on the input zero-padded (bottom, right) to multiples of ``divisor``; crop the logits back."""

    def __init__(self, model: nn.Module, divisor: int = 32) -> None:
        super().__init__()
        self.model = model
        self.divisor = divisor

    def forward(self, x: Tensor) -> Tensor:
        from fapn.layers.padding import pad_to_multiple

        height, width = x.shape[-2:]
        return self.model(pad_to_multiple(x, self.divisor))[..., :height, :width]


def build(name: str, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    from fapn.smp import FaPN

    if name == "fpn":
        return smp.FPN(encoder_name="resnet18", encoder_weights=None, classes=num_classes)
    return FaPN(encoder_name="resnet18", encoder_weights=None, classes=num_classes)


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from fapn.config import load_config
    from fapn.data.sampler import StreamDataset, StreamSampler
    from fapn.engine.lr_schedule import lr_multiplier
    from fapn.engine.optimizer import build_optimizer
    from fapn.engine.semseg.config import SegmentationConfig
    from fapn.engine.semseg.data import build_datasets
    from fapn.engine.semseg.eval import evaluate
    from fapn.engine.semseg.loss import segmentation_loss

    cfg = load_config(args.recipe, SegmentationConfig, [f"data.root={args.data}", f"train.seed={args.seed}"])
    train_set, val_set = build_datasets(cfg)
    if args.val_images:
        val_set.samples = val_set.samples[: args.val_images]  # the smoke test's budget
    torch.manual_seed(cfg.train.seed)
    model = PadToMultiple(build(name, train_set.num_classes))
    optim = cfg.optim
    optimizer = build_optimizer(model, optim.name, optim.lr, optim.weight_decay, optim.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_multiplier(
            optim.schedule,
            args.iterations,
            optim.power,
            warmup_iters=optim.warmup_iters,
            warmup_factor=optim.warmup_factor,
        ),
    )
    loader = torch.utils.data.DataLoader(
        StreamDataset(train_set, cfg.train.seed),
        batch_size=args.batch_size,
        sampler=StreamSampler(args.batch_size, 0, 0, 1),
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    start = time.perf_counter()
    model.train()
    losses = []
    for iteration, (images, targets) in enumerate(loader, start=1):
        loss = segmentation_loss(model(images), targets.long(), train_set.ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if iteration % args.log_period == 0 or iteration == args.iterations:
            print(f"{name} iteration {iteration}: loss {losses[-1]:.3f}", flush=True)
        if iteration >= args.iterations:
            break
    train_seconds = time.perf_counter() - start
    scores = evaluate(model.eval(), val_set, progress=False)
    return {
        "model": "smp.FPN" if name == "fpn" else "fapn.smp.FaPN",
        "encoder": "resnet18 (random init)",
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "train_seconds": round(train_seconds, 1),
        "final_loss": losses[-1] if losses else None,
        "val_images": len(val_set),
        "mIoU": scores["mIoU"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "boundary_mIoU": scores["boundary"]["mIoU"],
        "per_class_iou": scores["per_class_iou"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(default_data / "camvid-half"), help="CamVid folder (SegNet layout)")
    parser.add_argument(
        "--recipe", default="semseg/camvid_r18_fapn", help="the recipe whose data and optimiser are used"
    )
    parser.add_argument("--models", nargs="+", default=["fpn", "fapn"], choices=["fpn", "fapn"])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--val-images", type=int, default=0, help="evaluate on the first N val images (0: all)")
    parser.add_argument("--log-period", type=int, default=50)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/smp/camvid.json"))
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        parser.error(f"no CamVid folder at {args.data} (set --data or FAPN_DATA)")
    torch.set_num_threads(args.threads)
    results = {"command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), "models": {}}
    for name in args.models:
        results["models"][name] = run(name, args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")  # after each model: a crash keeps the first
    for result in results["models"].values():
        print(
            f"{result['model']:>14}: val mIoU {result['mIoU']:.1f}, boundary mIoU {result['boundary_mIoU']:.1f}, "
            f"{result['parameters_M']} M parameters, {result['train_seconds']} s for {result['iterations']} iterations"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
