"""Running the CamVid study: the fapn train / eval commands of a run, its validation curve from the log, the result
JSON, and the git commit of each result as it lands."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .plan import RECIPE, REPO, Run, missing_runs, result_path

__all__ = [
    "train_command",
    "eval_command",
    "validation_curve",
    "earlier_segments",
    "collect",
    "pack_predictions",
    "git_commit",
    "run_study",
]


def train_command(args: argparse.Namespace, run: Run, out: Path) -> list[str]:
    overrides = [
        f"data.root={args.data}",
        f"model.neck={run.variant}",
        f"train.seed={run.seed}",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    command = [sys.executable, "-m", "fapn", "train", RECIPE, "--output-dir", str(out)]
    for override in overrides:
        command += ["--set", override]
    return command


def eval_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fapn",
        "eval",
        RECIPE,
        "--weights",
        str(out / "last.pt"),
        "--set",
        f"data.root={args.data}",
        "--output",
        str(out / "final_eval.json"),
        "--save-predictions",
        str(out / "predictions"),
    ]


def validation_curve(log_file: Path) -> list[dict[str, float]]:
    """The ``val`` entries of a run's ``log.jsonl`` (one per ``train.eval_period``, plus the final one)."""
    curve: dict[int, dict[str, float]] = {}  # by iteration: a resumed run may log one twice; the last one counts
    for line in log_file.read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            val = record["val"]
            curve[record["iteration"]] = {
                "iteration": record["iteration"],
                "mIoU": val["mIoU"],
                "pixel_accuracy": val["pixel_accuracy"],
                "boundary_mIoU": val["boundary_mIoU"],
            }
    return [curve[i] for i in sorted(curve)]


def earlier_segments(log_file: Path) -> tuple[int, float]:
    """How many training processes ran before the last one, and their seconds, from a run's ``log.jsonl``.

    Each process (the first and every ``--resume``) logs ``time`` from its own start, so a drop in ``time`` marks a
    new process. A run resumed in a later session reports the sum over its processes as its wall time, including
    the few iterations redone after the cut; without this it would report only its last stretch.
    """
    finished: list[float] = []
    last = None
    for line in log_file.read_text().splitlines():
        seconds = json.loads(line).get("time")
        if seconds is None:
            continue
        if last is not None and seconds < last:
            finished.append(last)
        last = seconds
    return len(finished), sum(finished)


def collect(
    run: Run, out: Path, wall_seconds: float, command: list[str], started: str, scheduling: dict[str, Any]
) -> dict[str, Any]:
    """One run's result file: recipe, seed, budget, time, final scores, per-class IoU, the validation curve."""
    import torch

    metrics = json.loads((out / "metrics.json").read_text())
    segments, earlier_seconds = earlier_segments(out / "log.jsonl")
    checkpoint = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    result: dict[str, Any] = {
        "variant": run.variant,
        "seed": run.seed,
        "recipe": RECIPE,
        "config": checkpoint["config"],
        "iterations": int(checkpoint["iteration"]),
        "wall_seconds": round(earlier_seconds + wall_seconds, 1),
        "processes": segments + 1,
        "started_utc": started,
        "command": shlex.join(command),
        "scheduling": scheduling,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "mIoU": metrics["mIoU"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "mean_accuracy": metrics.get("mean_accuracy"),
        "boundary_mIoU": metrics["boundary"]["mIoU"],
        "boundary_width": metrics["boundary"]["width"],
        "per_class_iou": metrics["per_class_iou"],
        "per_class_boundary_iou": metrics["boundary"]["per_class_iou"],
        "validation_curve": validation_curve(out / "log.jsonl"),
    }
    final_eval = out / "final_eval.json"
    if final_eval.is_file():  # fapn eval's recall of ground-truth components of thin/thing classes by size
        result["small_objects"] = json.loads(final_eval.read_text()).get("small_objects")
    return result


def pack_predictions(out: Path, destination: Path) -> None:
    """A run's val predictions (uint8 label maps, a few hundred kB): Figure 1 and the small-object recall."""
    import numpy as np
    from PIL import Image

    files = sorted((out / "predictions").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no predictions in {out / 'predictions'}")
    labels = np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.uint8)
    np.savez_compressed(destination, names=np.array([f.stem for f in files]), labels=labels)


def git_commit(paths: list[Path], message: str) -> None:
    relative = [str(p.resolve().relative_to(REPO)) for p in paths]
    for attempt in range(20):  # other people may hold the index lock for a moment
        added = subprocess.run(["git", "-C", str(REPO), "add", "--", *relative], capture_output=True, text=True)
        if added.returncode == 0:
            done = subprocess.run(
                ["git", "-C", str(REPO), "commit", "-q", "-m", message, "--", *relative], capture_output=True, text=True
            )
            if done.returncode == 0:
                return
            error = done.stderr
        else:
            error = added.stderr
        if "index.lock" not in error:
            print(f"git commit failed: {error.strip()}", file=sys.stderr)
            return
        time.sleep(3 + attempt)
    print(f"git commit gave up (index.lock held): {relative}", file=sys.stderr)


def run_study(args: argparse.Namespace) -> int:
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    queue = list(args.runs) if args.runs is not None else missing_runs(results)
    if not queue:
        print("nothing to do: every run of the plan has a result (see --report)")
        return 0
    if not Path(args.data).is_dir():
        raise SystemExit(f"CamVid not found at {args.data}: pass --data or set FAPN_DATA")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    study_start = time.time()
    running: dict[Run, tuple[subprocess.Popen, float, str, list[str], str]] = {}
    failures = 0

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def start(run: Run) -> None:
        out = work / run.name
        command = train_command(args, run, out)
        if (out / "last.pt").is_file():
            # a run cut short (e.g. by the end of a session) continues exactly where its checkpoint left off
            command.append("--resume")
        elif out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} holds something that is not a resumable run: move it away before {run.name}")
        out.mkdir(parents=True, exist_ok=True)
        log(f"start {run.name}: {shlex.join(command)}")
        launch = ["chrt", "--fifo", "1", *command] if args.fifo else command
        with open(out / "train.log", "a") as handle:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(launch, stdout=handle, stderr=subprocess.STDOUT, env=env)
        running[run] = (process, time.time(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command, "train")

    def finish(run: Run) -> None:
        nonlocal failures
        process, started, started_utc, command, _ = running.pop(run)
        out = work / run.name
        wall = time.time() - started
        if process.returncode:
            failures += 1
            log(f"{run.name} FAILED (exit {process.returncode}); see {out / 'train.log'}")
            return
        written = [result_path(results, run)]
        # every run keeps its val predictions: Figure 1 (seed 0) and the small-object recall of every seed
        with open(out / "eval.log", "w") as handle:
            code = subprocess.call(eval_command(args, out), stdout=handle, stderr=subprocess.STDOUT, env=env)
        if code == 0:
            written.append(results / f"{run.name}_predictions.npz")
            pack_predictions(out, written[-1])
        else:
            log(f"{run.name}: saving predictions failed; see {out / 'eval.log'}")
        result = collect(
            run,
            out,
            wall,
            command,
            started_utc,
            {"parallel": args.parallel, "threads": args.threads, "fifo": args.fifo},
        )
        result_path(results, run).write_text(json.dumps(result, indent=1) + "\n")
        log(
            f"done {run.name}: {wall / 60:.1f} min, val mIoU {result['mIoU']:.2f}, "
            f"boundary mIoU {result['boundary_mIoU']:.2f}"
        )
        if args.commit:
            git_commit(
                written,
                f"camvid study: {run.name} ({result['iterations']} it., "
                f"val mIoU {result['mIoU']:.1f}, boundary {result['boundary_mIoU']:.1f})",
            )

    while queue or running:
        too_late = args.no_start_after is not None and (time.time() - study_start) / 60 > args.no_start_after
        while queue and len(running) < args.parallel and not too_late:
            start(queue.pop(0))
        if too_late and queue and not running:
            log(f"not starting {', '.join(r.name for r in queue)}: past --no-start-after")
            break
        time.sleep(10)
        for run in [r for r, (p, *_) in running.items() if p.poll() is not None]:
            finish(run)
    return 1 if failures else 0
