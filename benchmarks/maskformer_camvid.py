"""CamVid benchmark: MaskFormer with the FaPN pixel decoder against MaskFormer with its FPN, from scratch.

Trains ``semseg/camvid_maskformer_fpn`` and ``semseg/camvid_maskformer_fapn`` with ``fapn train`` on the same data,
seed, recipe and number of iterations (torchvision ResNet-18 encoder, no ImageNet weights, width 128, 50 queries,
6 decoder layers; see the recipes), sequentially or both at once with ``--parallel``, then prints a markdown
report: the command, wall time per model, val mIoU, pixel accuracy, boundary (trimap) mIoU, per-class IoU, and
the parameters and GMAC of both models (at the recipe's width and at MaskFormer's, 512x512, the paper's
convention, counted on the meta device). Results also go to ``OUTPUT/results.json``.

Usage:
    python benchmarks/maskformer_camvid.py --data ../shared/data/camvid-half --iterations 1000 --output /tmp/mf
    python benchmarks/maskformer_camvid.py --iterations 3 --eval-period 0 --output /tmp/mf_tiny   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"fpn": "semseg/camvid_maskformer_fpn", "fapn": "semseg/camvid_maskformer_fapn"}
LABELS = {"fpn": "MaskFormer-FPN", "fapn": "MaskFormer-FaPN"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(default_data / "camvid-half"), help="CamVid folder (SegNet layout)")
    parser.add_argument("--iterations", type=int, default=1000, help="training iterations per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-period", type=int, default=500, help="0: evaluate at the end only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", action="store_true", help="train the models at the same time")
    parser.add_argument("--output", default="/tmp/maskformer_camvid", help="runs and results.json go here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    return parser.parse_args()


def train_command(args: argparse.Namespace, variant: str) -> list[str]:
    overrides = [
        f"data.root={args.data}",
        f"train.iterations={args.iterations}",
        f"train.batch_size={args.batch_size}",
        f"train.eval_period={args.eval_period}",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    command = [
        sys.executable,
        "-m",
        "fapn",
        "train",
        VARIANTS[variant],
        "--output-dir",
        str(Path(args.output) / variant),
        "--overwrite",  # a benchmark re-run replaces its own earlier run (fapn train refuses otherwise)
    ]
    for override in overrides:
        command += ["--set", override]
    return command


def complexity(num_classes: int = 11) -> dict[str, dict[str, dict[str, float]]]:
    """Parameters (M) and GMAC at 512x512 of both decoders, at the CamVid recipe's width and at MaskFormer's
    (ResNet-50, width 256, 100 queries, 150 classes: the ADE20K model)."""
    import torch

    from fapn.config import load_config
    from fapn.engine.semseg.config import SegmentationConfig
    from fapn.models import get_model
    from fapn.profiling import profile_model

    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant, recipe in VARIANTS.items():
        cfg = load_config(recipe, SegmentationConfig)
        settings = {
            "recipe": dict(backbone=cfg.model.backbone, num_classes=num_classes, **cfg.model.options),
            "ade20k_r50": dict(backbone="resnet50", num_classes=150),
        }
        for key, kwargs in settings.items():
            with torch.device("meta"):
                model = get_model(cfg.model.name, **kwargs)
            c = profile_model(model, (1, 3, 512, 512))
            table.setdefault(key, {})[variant] = {
                "params_m": c.params_m,
                "gmacs_paper": c.gmacs_paper,
                "gmacs_full": c.gmacs_full,
            }
    return table


def main() -> int:
    args = parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    wall: dict[str, float] = {}

    def start(variant: str) -> None:
        log = open(out / f"{variant}.log", "w")  # noqa: SIM115 (held open while the training process writes it)
        print(f"[{time.strftime('%H:%M:%S')}] {variant}: {shlex.join(train_command(args, variant))}", flush=True)
        process = subprocess.Popen(train_command(args, variant), stdout=log, stderr=subprocess.STDOUT, env=env)
        running[variant] = (process, time.time())

    def finish(variant: str) -> None:
        process, started = running.pop(variant)
        code = process.wait()
        wall[variant] = time.time() - started
        print(f"[{time.strftime('%H:%M:%S')}] {variant}: exit {code} after {wall[variant] / 60:.1f} min", flush=True)
        if code:
            raise SystemExit(f"{variant} training failed; see {out / (variant + '.log')}")

    if args.parallel:
        for variant in args.variants:
            start(variant)
        for variant in args.variants:
            finish(variant)
    else:
        for variant in args.variants:
            start(variant)
            finish(variant)

    results: dict = {"runs": {}, "complexity_512": complexity()}
    for variant in args.variants:
        metrics = json.loads((out / variant / "metrics.json").read_text())
        results["runs"][variant] = {"wall_seconds": wall[variant], **metrics}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results))
    return 0


def report(results: dict) -> str:
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
    runs = results["runs"]
    lines = [
        "```",
        "python " + shlex.join(sys.argv),
        "```",
        "",
        "| model | wall time | val mIoU | pixel acc | boundary mIoU |",
        "|---|---|---|---|---|",
    ]
    for variant, r in runs.items():
        lines.append(
            f"| R18 {LABELS[variant]} | {r['wall_seconds'] / 60:.1f} min | {fmt(r['mIoU'])} | "
            f"{fmt(r['pixel_accuracy'])} | {fmt(r['boundary']['mIoU'])} ({r['boundary']['width']} px) |"
        )
    names = list(next(iter(runs.values()))["per_class_iou"])
    lines += [
        "",
        "| class | "
        + " | ".join(f"{LABELS[v]} IoU" for v in runs)
        + " | "
        + " | ".join(f"{LABELS[v]} bIoU" for v in runs)
        + " |",
        "|---" * (1 + 2 * len(runs)) + "|",
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(fmt(r["per_class_iou"][name]) for r in runs.values())
            + " | "
            + " | ".join(fmt(r["boundary"]["per_class_iou"][name]) for r in runs.values())
            + " |"
        )
    lines += ["", "| setting (512x512) | model | params (M) | GMAC (paper) | GMAC (full) |", "|---|---|---|---|---|"]
    for setting, models in results["complexity_512"].items():
        for variant, c in models.items():
            lines.append(
                f"| {setting} | {LABELS[variant]} | {c['params_m']:.2f} | {c['gmacs_paper']:.2f} | "
                f"{c['gmacs_full']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
