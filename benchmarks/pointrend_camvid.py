"""CamVid benchmark: PointRend semantic segmentation on FaPN against PointRend on FPN, from scratch, short CPU budget.

The paper's Cityscapes model is PointRend's semantic head on the FaPN neck (``semseg/cityscapes_pointrend_r50_fapn``,
a GPU recipe). This runs the same model family on CamVid at CPU scale: ``fapn train`` with the recipe
``semseg/camvid_r18_fapn`` (CamVid at 240x180, batch 8, poly schedule, same data order and seed for both) and
``model.name=pointrend_semantic`` on a ResNet-18 from scratch, PointRend's authors' point settings (2048 training
points per image chosen by uncertainty, inference by 2 subdivision steps of 8192 points), only the neck differing
(``model.options.neck=fapn`` or ``fpn``). Prints a markdown report (the command, wall time, val mIoU, pixel
accuracy, boundary mIoU, per-class IoU) and writes ``OUTPUT/results.json``. The two models train one after the
other, or both at once with ``--parallel``.

Usage:
    python benchmarks/pointrend_camvid.py --data ../shared/data/camvid-half --iterations 1000 --output /tmp/pr_camvid
    python benchmarks/pointrend_camvid.py --iterations 2 --eval-period 0 --output /tmp/pr_camvid_tiny   # smoke test
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

RECIPE = "semseg/camvid_r18_fapn"
NECKS = {"fpn": "PointRend-FPN", "fapn": "PointRend-FaPN"}
POINTREND = "{neck: %s, train_num_points: 2048, subdivision_steps: 2, subdivision_num_points: 8192}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(default_data / "camvid-half"), help="CamVid folder (SegNet layout)")
    parser.add_argument("--iterations", type=int, default=1000, help="training iterations per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-period", type=int, default=500, help="0: evaluate at the end only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--necks", nargs="+", default=list(NECKS), choices=list(NECKS))
    parser.add_argument("--parallel", action="store_true", help="train the models at the same time")
    parser.add_argument("--output", default="/tmp/pointrend_camvid", help="runs and results.json go here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    return parser.parse_args()


def train_command(args: argparse.Namespace, neck: str) -> list[str]:
    overrides = [
        "model.name=pointrend_semantic",
        "model.backbone=resnet18",
        f"model.options={POINTREND % neck}",
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
        RECIPE,
        "--output-dir",
        str(Path(args.output) / neck),
        "--overwrite",
    ]
    for override in overrides:
        command += ["--set", override]
    return command


def report(args: argparse.Namespace, results: dict) -> str:
    def fmt(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    lines = [
        "```",
        "python " + shlex.join(sys.argv),
        "```",
        "",
        "| model | wall time | val mIoU | pixel acc | boundary mIoU |",
        "|---|---|---|---|---|",
    ]
    for neck, r in results.items():
        lines.append(
            f"| R18 {NECKS[neck]} | {r['wall_seconds'] / 60:.1f} min | {fmt(r['mIoU'])} | "
            f"{fmt(r['pixel_accuracy'])} | {fmt(r['boundary']['mIoU'])} ({r['boundary']['width']} px) |"
        )
    names = list(next(iter(results.values()))["per_class_iou"])
    lines += [
        "",
        "| class | "
        + " | ".join(f"{NECKS[n]} IoU" for n in results)
        + " | "
        + " | ".join(f"{NECKS[n]} bIoU" for n in results)
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


def main() -> int:
    args = parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    wall: dict[str, float] = {}

    def start(neck: str) -> None:
        command = train_command(args, neck)
        print(f"[{time.strftime('%H:%M:%S')}] {neck}: {shlex.join(command)}", flush=True)
        log = open(out / f"{neck}.log", "w")  # noqa: SIM115
        running[neck] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())

    def finish(neck: str) -> None:
        process, started = running.pop(neck)
        code = process.wait()
        wall[neck] = time.time() - started
        print(f"[{time.strftime('%H:%M:%S')}] {neck}: exit {code} after {wall[neck] / 60:.1f} min", flush=True)
        if code:
            raise SystemExit(f"{neck} training failed; see {out / (neck + '.log')}")

    if args.parallel:
        for neck in args.necks:
            start(neck)
    for neck in args.necks:
        if not args.parallel:
            start(neck)
        finish(neck)
    results = {
        neck: {"wall_seconds": wall[neck], **json.loads((out / neck / "metrics.json").read_text())}
        for neck in args.necks
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
