"""What the CamVid model-pair benchmarks share: ``camvid.py``, ``pointrend_camvid.py`` and ``maskformer_camvid.py``.

Each trains models with ``fapn train`` on the same data, seed, recipe and number of iterations, one process per
model with one thread each (one after the other, or all at once with ``--parallel``), then reports them side by
side: the commands, wall time, val mIoU, pixel accuracy, boundary (trimap) mIoU and per-class IoU. A model's run
lives in ``OUTPUT/<model>/``; its wall time and the command that started it go to ``OUTPUT/<model>/benchmark.json``,
so the models of one benchmark may also be trained by separate invocations into one ``--output`` (``--models fpn``
on one core, ``--models fapn`` on the other), and ``--report`` prints the tables of every model found there
without training. ``OUTPUT/results.json`` holds what the tables show.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Model:
    """One model of a benchmark: its label in the tables, its recipe and the overrides that make it."""

    label: str
    recipe: str
    overrides: tuple[str, ...] = ()


def parse_args(
    doc: str,
    models: dict[str, Model],
    *,
    iterations: int,
    eval_period: int,
    output: str,
    argv: list[str] | None = None,
) -> argparse.Namespace:
    """The options every pair benchmark takes; the defaults differ per benchmark."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(default_data / "camvid-half"), help="CamVid folder (SegNet layout)")
    parser.add_argument("--iterations", type=int, default=iterations, help="training iterations per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-period", type=int, default=eval_period, help="0: evaluate at the end only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument(
        "--models",
        "--necks",
        "--variants",
        dest="models",
        nargs="+",
        default=list(models),
        choices=list(models),
        help="the models to train (default: all)",
    )
    parser.add_argument("--parallel", action="store_true", help="train the models at the same time")
    parser.add_argument("--output", default=output, help="runs and results.json go here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    parser.add_argument("--report", action="store_true", help="only print the tables of the runs in --output")
    return parser.parse_args(argv)


def train_command(args: argparse.Namespace, key: str, model: Model) -> list[str]:
    """``fapn train`` for one model; a re-run replaces its own earlier run (``fapn train`` refuses otherwise)."""
    overrides = [
        *model.overrides,
        f"data.root={args.data}",
        f"train.iterations={args.iterations}",
        f"train.batch_size={args.batch_size}",
        f"train.eval_period={args.eval_period}",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    command = [sys.executable, "-m", "fapn", "train", model.recipe, "--output-dir", str(Path(args.output) / key)]
    command.append("--overwrite")
    for override in overrides:
        command += ["--set", override]
    return command


def train(args: argparse.Namespace, models: dict[str, Model]) -> None:
    """Train ``args.models``, one process each, and record each one's wall time and command."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    invocation = "python " + shlex.join(sys.argv)
    running: dict[str, tuple[subprocess.Popen, float]] = {}

    def start(key: str) -> None:
        command = train_command(args, key, models[key])
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {shlex.join(command)}", flush=True)
        with open(out / f"{key}.log", "w") as log:  # the child keeps its own copy of the descriptor
            running[key] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())

    def finish(key: str) -> None:
        process, started = running.pop(key)
        code = process.wait()
        wall = time.time() - started
        print(f"[{time.strftime('%H:%M:%S')}] {key}: exit {code} after {wall / 60:.1f} min", flush=True)
        if code:
            raise SystemExit(f"{key} training failed; see {out / (key + '.log')}")
        record = {"wall_seconds": wall, "command": invocation}
        (out / key / "benchmark.json").write_text(json.dumps(record, indent=2))

    for key in args.models:
        start(key)
        if not args.parallel:
            finish(key)
    for key in list(running):
        finish(key)


def collect(output: Path, models: dict[str, Model]) -> dict[str, dict[str, Any]]:
    """Every finished run under ``output``, in the benchmark's model order: benchmark.json + metrics.json."""
    runs = {}
    for key in models:
        folder = output / key
        if (folder / "metrics.json").is_file() and (folder / "benchmark.json").is_file():
            runs[key] = {
                **json.loads((folder / "benchmark.json").read_text()),
                **json.loads((folder / "metrics.json").read_text()),
            }
    return runs


def tables(runs: dict[str, dict[str, Any]], models: dict[str, Model]) -> list[str]:
    """Markdown: the commands, one row per model, then per-class IoU and boundary IoU side by side."""

    def fmt(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    commands = list(dict.fromkeys(r["command"] for r in runs.values()))
    lines = ["```", *commands, "```", ""]
    lines += ["| model | wall time | val mIoU | pixel acc | boundary mIoU |", "|---|---|---|---|---|"]
    for key, r in runs.items():
        lines.append(
            f"| {models[key].label} | {r['wall_seconds'] / 60:.1f} min | {fmt(r['mIoU'])} | "
            f"{fmt(r['pixel_accuracy'])} | {fmt(r['boundary']['mIoU'])} ({r['boundary']['width']} px) |"
        )
    labels = [models[key].label for key in runs]
    header = [f"{label} IoU" for label in labels] + [f"{label} bIoU" for label in labels]
    lines += ["", "| class | " + " | ".join(header) + " |", "|---" * (1 + len(header)) + "|"]
    for name in next(iter(runs.values()))["per_class_iou"]:
        cells = [fmt(r["per_class_iou"][name]) for r in runs.values()]
        cells += [fmt(r["boundary"]["per_class_iou"][name]) for r in runs.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(
    doc: str,
    models: dict[str, Model],
    *,
    iterations: int,
    eval_period: int,
    output: str,
    extra: Callable[[], tuple[dict[str, Any], list[str]]] | None = None,
) -> int:
    """Train (unless ``--report``), then write ``OUTPUT/results.json`` and print the report.

    Args:
        doc: the benchmark's description, for ``--help``.
        models: the benchmark's models by key (the names of their run folders).
        iterations, eval_period, output: the benchmark's defaults.
        extra: returns more results (under their own keys in results.json) and the markdown lines that show them.
    """
    args = parse_args(doc, models, iterations=iterations, eval_period=eval_period, output=output)
    if not args.report:
        train(args, models)
    out = Path(args.output)
    runs = collect(out, models)
    if not runs:
        print(f"no finished runs under {out}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"runs": runs}
    lines = tables(runs, models)
    if extra is not None:
        more, more_lines = extra()
        results.update(more)
        lines += ["", *more_lines]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))
    return 0
