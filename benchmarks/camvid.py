"""CamVid benchmark: R18 FPN vs FaPN from scratch, same recipe and budget, evaluated on val.

Trains ``semseg/camvid_r18_fpn`` and ``semseg/camvid_r18_fapn`` with ``fapn train`` (sequentially, or both at
once with ``--parallel``), then prints a markdown report: the command, wall time per model, val mIoU, pixel
accuracy, the boundary (trimap) mIoU and per-class IoU. Results also go to ``OUTPUT/results.json``.

Usage:
    python benchmarks/camvid.py --data ../shared/data/camvid-half --iterations 500 --parallel --output /tmp/camvid
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

VARIANTS = {"fpn": "semseg/camvid_r18_fpn", "fapn": "semseg/camvid_r18_fapn"}
LABELS = {"fpn": "FPN", "fapn": "FaPN"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(default_data / "camvid-half"), help="CamVid folder (SegNet layout)")
    parser.add_argument("--iterations", type=int, default=500, help="training iterations per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-period", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", action="store_true", help="train the models at the same time")
    parser.add_argument("--output", default="/tmp/camvid", help="runs and results.json go here")
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
    ]
    for override in overrides:
        command += ["--set", override]
    return command


def main() -> int:
    args = parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    wall: dict[str, float] = {}

    def start(variant: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {variant}: {shlex.join(train_command(args, variant))}", flush=True)
        with open(out / f"{variant}.log", "w") as log:  # the child keeps its own copy of the descriptor
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

    results = {}
    for variant in args.variants:
        metrics = json.loads((out / variant / "metrics.json").read_text())
        results[variant] = {"wall_seconds": wall[variant], **metrics}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(args, results))
    return 0


def report(args: argparse.Namespace, results: dict) -> str:
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
    lines = [
        "```",
        "python " + shlex.join(sys.argv),
        "```",
        "",
        "| model | wall time | val mIoU | pixel acc | boundary mIoU |",
        "|---|---|---|---|---|",
    ]
    for variant, r in results.items():
        lines.append(
            f"| R18 {LABELS[variant]} | {r['wall_seconds'] / 60:.1f} min | {fmt(r['mIoU'])} | "
            f"{fmt(r['pixel_accuracy'])} | {fmt(r['boundary']['mIoU'])} ({r['boundary']['width']} px) |"
        )
    names = list(next(iter(results.values()))["per_class_iou"])
    lines += [
        "",
        "| class | "
        + " | ".join(f"{LABELS[v]} IoU" for v in results)
        + " | "
        + " | ".join(f"{LABELS[v]} bIoU" for v in results)
        + " |",
        "|---" * (1 + 2 * len(results)) + "|",
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(fmt(r["per_class_iou"][name]) for r in results.values())
            + " | "
            + " | ".join(fmt(r["boundary"]["per_class_iou"][name]) for r in results.values())
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
