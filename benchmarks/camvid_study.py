"""CamVid study: the supplementary's Table 1 ablation (FPN, + FAM, + FAM + FSM, FaPN) over seeds, from scratch.

Every run trains the shipped recipe ``semseg/camvid_r18_study`` (one recipe for all four variants; how it was
chosen: ``benchmarks/results/camvid/pilot.json`` and docs/benchmarks.md) with ``fapn train``, only
``model.variant`` and ``train.seed`` changing, so a seed gives every variant the same data order and
augmentation. Runs go two at a time with one torch thread each (the 2-core machine this was written for),
checkpoints outside the repository (``--work-dir``), and each finished run's result as one JSON file under
``benchmarks/results/camvid/`` (committed with ``--commit`` as it lands). A study can span several sessions: a
run cut short continues from its last checkpoint (every 500 iterations) when the work folder is still there;
``--missing`` lists the runs still to do; ``--report`` aggregates every result present into the markdown tables
of docs/benchmarks.md (between the ``camvid-study`` markers), the short table of the README (between the
``camvid-study-summary`` markers) and the pictures in docs/images/.

Usage:
    python benchmarks/camvid_study.py --missing
    python benchmarks/camvid_study.py --commit                 # run the missing runs, two at a time
    python benchmarks/camvid_study.py --runs fpn:0 fapn:0 --commit
    python benchmarks/camvid_study.py --report                 # needs matplotlib and scipy (both in "fapn[test]")
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = "semseg/camvid_r18_study"
VARIANTS = ("fpn", "fpn+fam", "fpn+fam+fsm", "fapn")
LABELS = {"fpn": "FPN", "fpn+fam": "+ FAM", "fpn+fam+fsm": "+ FAM + FSM", "fapn": "+ FAM + FSM + Concat (FaPN)"}
SHORT = {"fpn": "FPN", "fpn+fam": "FPN+FAM", "fpn+fam+fsm": "FPN+FAM+FSM", "fapn": "FaPN"}
PAPER_MIOU = {"fpn": 68.6, "fpn+fam": 73.8, "fpn+fam+fsm": 74.2, "fapn": 75.6}  # supplementary Table 1, Cityscapes
# The study plan, in the order runs are started: seed 0 of every variant first (Figure 1 needs them), then the
# seeds that make FPN vs FaPN a measured difference, then the middle rows' second seed.
PLAN: tuple[tuple[str, int], ...] = (
    ("fpn", 0),
    ("fapn", 0),
    ("fpn+fam", 0),
    ("fpn+fam+fsm", 0),
    ("fpn", 1),
    ("fapn", 1),
    ("fpn", 2),
    ("fapn", 2),
    ("fpn+fam", 1),
    ("fpn+fam+fsm", 1),
)
THIN_CLASSES = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")
FIGURE1_VARIANTS = ("fpn", "fpn+fam", "fapn")  # the supplementary's Figure 1 columns
MARK_BEGIN, MARK_END = "<!-- camvid-study:begin -->", "<!-- camvid-study:end -->"
README_BEGIN, README_END = "<!-- camvid-study-summary:begin -->", "<!-- camvid-study-summary:end -->"


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}_seed{self.seed}"

    @classmethod
    def parse(cls, text: str) -> Run:
        variant, _, seed = text.rpartition(":")
        if variant not in VARIANTS or not seed.isdigit():
            raise argparse.ArgumentTypeError(f"expected VARIANT:SEED with VARIANT in {VARIANTS}, got {text!r}")
        return cls(variant, int(seed))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", REPO.parent / "shared" / "data")) / "camvid-half"
    parser.add_argument("--data", default=str(default_data), help="CamVid folder, SegNet layout (default: %(default)s)")
    parser.add_argument(
        "--runs",
        nargs="+",
        type=Run.parse,
        default=None,
        metavar="VARIANT:SEED",
        help="runs to do (default: every run of the plan without a result)",
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: %(default)s)")
    parser.add_argument(
        "--work-dir",
        default=str(Path.home() / ".cache" / "fapn" / "camvid_study"),
        help="checkpoints and logs, outside the repository (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        default=str(REPO / "benchmarks" / "results" / "camvid"),
        help="one JSON per finished run (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe overrides for every run (recorded in each result; a study should not need any)",
    )
    parser.add_argument(
        "--fifo",
        action="store_true",
        help="run each training under SCHED_FIFO (chrt, root only): on a machine shared with other "
        "work it then keeps a core to itself, where nice values were measured to have no effect",
    )
    parser.add_argument("--commit", action="store_true", help="git-commit each result file as it lands")
    parser.add_argument(
        "--no-start-after",
        type=float,
        default=None,
        metavar="MINUTES",
        help="start no new run after this many minutes (to end before a session does)",
    )
    parser.add_argument("--missing", action="store_true", help="list the plan's runs without a result and exit")
    parser.add_argument("--report", action="store_true", help="aggregate the results into docs and pictures and exit")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where --report writes (benchmarks.md, images/)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------- running


def result_path(results: Path, run: Run) -> Path:
    return results / f"{run.name}.json"


def missing_runs(results: Path) -> list[Run]:
    return [Run(v, s) for v, s in PLAN if not result_path(results, Run(v, s)).is_file()]


def train_command(args: argparse.Namespace, run: Run, out: Path) -> list[str]:
    overrides = [
        f"data.root={args.data}",
        f"model.variant={run.variant}",
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


# ----------------------------------------------------------------------------------------------- report


def load_results(results: Path) -> dict[str, list[dict[str, Any]]]:
    """Every run's result file under ``results``, by variant and sorted by seed; a broken file stops the report
    with its name (the report would otherwise silently drop a run)."""
    by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for path in sorted(results.glob("*_seed*.json")):
        try:
            result = json.loads(path.read_text())
            by_variant[result["variant"]].append(result)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise SystemExit(
                f"{path} is not a study result ({type(error).__name__}: {error}); fix or remove it"
            ) from None
    for runs in by_variant.values():
        runs.sort(key=lambda r: r["seed"])
    return by_variant


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def thin_mean(result: dict[str, Any], key: str = "per_class_iou") -> float:
    return sum(result[key][c] for c in THIN_CLASSES) / len(THIN_CLASSES)


def complexity_rows(num_classes: int, size: tuple[int, int]) -> dict[str, tuple[float, float]]:
    from fapn.models import realtime_fapn
    from fapn.profiling import profile_model

    rows = {}
    for variant in VARIANTS:
        c = profile_model(realtime_fapn(backbone="resnet18", num_classes=num_classes, variant=variant), (1, 3, *size))
        rows[variant] = (c.params_m, c.gmacs_paper)
    return rows


def paired_differences(by_variant: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> list[float]:
    """``b - a`` per seed, for the seeds both variants have (a seed fixes the data order of both)."""
    seeds_a = {r["seed"]: r for r in by_variant[a]}
    return [r[key] - seeds_a[r["seed"]][key] for r in by_variant[b] if r["seed"] in seeds_a]


def paired_interval(differences: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean paired difference (one-sample t on the per-seed
    differences, n - 1 degrees of freedom, scipy's ``ttest_1samp``); None below two seeds. With 2 or 3 seeds the
    t quantile is 12.7 or 4.3, so only a difference large against its spread excludes zero."""
    if len(differences) < 2:
        return None
    from scipy import stats

    interval = stats.ttest_1samp(differences, 0.0).confidence_interval(level)
    return float(interval.low), float(interval.high)


def fmt_interval(differences: list[float]) -> str:
    interval = paired_interval(differences)
    return "-" if interval is None else f"[{interval[0]:+.1f}, {interval[1]:+.1f}]"


def markdown_report(
    by_variant: dict[str, list[dict[str, Any]]], complexity: dict[str, tuple[float, float]], size: tuple[int, int]
) -> str:
    present = [v for v in VARIANTS if by_variant[v]]
    any_result = by_variant[present[0]][0]
    cfg = any_result["config"]
    lines = [
        "Generated by `python benchmarks/camvid_study.py --report` from the result files in "
        "`benchmarks/results/camvid/`; do not edit by hand.",
        "",
        f"Recipe `{RECIPE}`: ResNet-18 from scratch, {any_result['iterations']} iterations of batch "
        f"{cfg['train']['batch_size']} (crop {cfg['data']['crop_size'][0]}x{cfg['data']['crop_size'][1]}), "
        f"loss `{cfg['optim'].get('loss', 'ce')}`"
        + (" with median-frequency class weights" if cfg["optim"].get("class_weights") else "")
        + f", lr {cfg['optim']['lr']} poly; evaluated on the 101 val frames of camvid-half at full size "
        f"(boundary mIoU: pixels within {any_result['boundary_width']} px of a label boundary). "
        "Mean ± sample standard deviation over seeds; n = number of seeds.",
        "",
        f"| variant | params (M) | GMAC at {size[0]}x{size[1]} | n | val mIoU | boundary mIoU | pixel acc | "
        "thin-class IoU | paper mIoU (Cityscapes) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = by_variant[variant]
        params, gmac = complexity[variant]
        lines.append(
            f"| {LABELS[variant]} | {params:.2f} | {gmac:.2f} | {len(runs)} | {fmt_ms([r['mIoU'] for r in runs])} | "
            f"{fmt_ms([r['boundary_mIoU'] for r in runs])} | {fmt_ms([r['pixel_accuracy'] for r in runs])} | "
            f"{fmt_ms([thin_mean(r) for r in runs])} | {PAPER_MIOU[variant]} |"
        )
    lines += ["", "Thin-class IoU: the mean IoU of " + ", ".join(THIN_CLASSES) + "."]

    compared = [v for v in VARIANTS[1:] if by_variant[v]]
    if by_variant["fpn"] and compared:
        lines += [
            "",
            "**Each row minus FPN**, per seed (a seed gives every variant the same data order and augmentation):",
            "",
            "| row | metric | per-seed differences | mean ± std | 95% interval (paired t) | goal |",
            "|---|---|---|---|---|---|",
        ]
        for variant in compared:
            goal = ">= 1.0" if variant == "fapn" else "-"
            for key, label in (("mIoU", "val mIoU"), ("boundary_mIoU", "boundary mIoU")):
                diffs = paired_differences(by_variant, "fpn", variant, key)
                if diffs:
                    lines.append(
                        f"| {SHORT[variant]} | {label} | {', '.join(f'{d:+.1f}' for d in diffs)} | {fmt_ms(diffs)} | "
                        f"{fmt_interval(diffs)} | {goal} |"
                    )
        lines += [
            "",
            "The interval is where the mean difference lies with 95% confidence given the seeds' spread; a row's "
            "gain over FPN is beyond seed noise only where it excludes 0 (the t quantile is 12.7 at 2 seeds and 4.3 "
            "at 3, so few seeds give wide intervals).",
        ]

    lines += ["", *goal_lines(by_variant)]

    names = list(any_result["per_class_iou"])
    shown = [v for v in ("fpn", "fapn") if by_variant[v]]
    if shown:
        lines += [
            "",
            "| class | "
            + " | ".join(f"{SHORT[v]} IoU" for v in shown)
            + " | "
            + " | ".join(f"{SHORT[v]} boundary IoU" for v in shown)
            + " |",
            "|---" * (1 + 2 * len(shown)) + "|",
        ]
        for name in names:
            lines.append(
                f"| {name} | "
                + " | ".join(fmt_ms([r["per_class_iou"][name] for r in by_variant[v]]) for v in shown)
                + " | "
                + " | ".join(fmt_ms([r["per_class_boundary_iou"][name] for r in by_variant[v]]) for v in shown)
                + " |"
            )
    lines += [
        "",
        "| run | iterations | wall time | val mIoU | boundary mIoU | machine load at end |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for r in by_variant[variant]:
            load = r["machine"].get("load_average_at_end")
            processes = r.get("processes", 1)
            resumed = f" ({processes} processes: resumed)" if processes > 1 else ""
            lines.append(
                f"| {SHORT[variant]} seed {r['seed']} | {r['iterations']} | {r['wall_seconds'] / 60:.0f} min{resumed} | "
                f"{r['mIoU']:.1f} | {r['boundary_mIoU']:.1f} | {f'{load[0]:.1f}' if load else '-'} |"
            )
    todo = missing_runs(RESULTS_DIR)
    if todo:
        lines += [
            "",
            "Runs of the plan still to do: "
            + ", ".join(f"{SHORT[r.variant]} seed {r.seed}" for r in todo)
            + " (`python benchmarks/camvid_study.py --missing`).",
        ]
    return "\n".join(lines)


def small_object_recall(result: dict[str, Any], results: Path, data: Path) -> dict[str, Any] | None:
    """A run's small-object recall (``fapn eval``'s ``small_objects``: ground-truth components of the thing-like
    classes found by the prediction, by COCO size bucket): from its result file, else computed from its saved
    predictions and the ground truth in ``data``; ``None`` without either."""
    if result.get("small_objects"):
        return result["small_objects"]
    pack = results / f"{result['variant']}_seed{result['seed']}_predictions.npz"
    if not pack.is_file() or not (data / "valannot").is_dir():
        return None
    import numpy as np
    from PIL import Image

    from fapn.metrics.small_objects import small_object_recall_for

    classes = json.loads((data / "classes.json").read_text())["classes"]
    recall = small_object_recall_for(classes)
    if recall is None:
        return None
    loaded = np.load(pack)
    for name, prediction in zip(loaded["names"], loaded["labels"]):
        recall.update(prediction.astype(np.int64), np.asarray(Image.open(data / "valannot" / f"{name}.png")))
    return recall.compute()


def small_object_report(by_variant: dict[str, list[dict[str, Any]]], results: Path, data: Path) -> list[str]:
    """The semantic small-object recall per variant (mean ± std over the seeds with predictions), and FaPN minus
    FPN paired by seed."""
    recalls = {v: [(r["seed"], small_object_recall(r, results, data)) for r in by_variant[v]] for v in VARIANTS}
    recalls = {v: [(seed, s) for seed, s in runs if s is not None] for v, runs in recalls.items()}
    if not any(recalls.values()):
        return []
    classes = next(s for runs in recalls.values() for _, s in runs)["classes"]
    lines = [
        "",
        "**Small objects** (`fapn.metrics.small_objects`): the recall of ground-truth connected components of "
        f"{', '.join(classes)} on the val frames, found when the prediction gives its class to at least half of "
        "the component; by COCO size bucket at the evaluated 240x180 size (small < 32^2 pixels, medium < 96^2); "
        "the mean over those classes, then per class for small components. Mean ± std over the seeds whose "
        "predictions were saved (n).",
        "",
        "| variant | n | recall small | recall medium | recall large | "
        + " | ".join(f"{c} small" for c in classes)
        + " |",
        "|---" * (5 + len(classes)) + "|",
    ]
    for variant in VARIANTS:
        runs = [s for _, s in recalls[variant]]
        if not runs:
            continue

        def values(get: Any, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [v for v in (get(s) for s in runs) if v is not None]

        row = [fmt_ms(values(lambda s, b=b: s[f"mean_recall_{b}"])) for b in ("small", "medium", "large")]
        row += [fmt_ms(values(lambda s, c=c: s["per_class"][c]["small"]["recall"])) for c in classes]
        components = runs[0]["per_class"]
        counts = "/".join(str(components[c]["small"]["components"]) for c in classes)
        lines.append(f"| {LABELS[variant]} | {len(runs)} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"Small ground-truth components per class ({'/'.join(classes)}): {counts}.")
    fpn = dict(recalls["fpn"])
    diffs = [s["mean_recall_small"] - fpn[seed]["mean_recall_small"] for seed, s in recalls["fapn"] if seed in fpn]
    if diffs:
        lines.append(
            f"FaPN minus FPN, small-object recall, paired by seed: {', '.join(f'{d:+.1f}' for d in diffs)} "
            f"(95% interval {fmt_interval(diffs)}; an interval needs two seeds with predictions)."
        )
    return lines


def readme_summary(by_variant: dict[str, list[dict[str, Any]]]) -> str:
    """The README's short form of the study: one row per variant with results, and FaPN minus FPN."""
    done = sum(len(runs) for runs in by_variant.values())
    lines = [
        f"Generated by `python benchmarks/camvid_study.py --report` ({done} of the planned {len(PLAN)} runs); "
        "mean ± standard deviation over seeds.",
        "",
        "| variant | seeds | val mIoU | boundary mIoU | pole / sign / pedestrian / bicyclist IoU |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = by_variant[variant]
        if runs:
            thin = " / ".join(fmt_ms([r["per_class_iou"][c] for r in runs]) for c in THIN_CLASSES)
            lines.append(
                f"| {LABELS[variant]} | {len(runs)} | {fmt_ms([r['mIoU'] for r in runs])} | "
                f"{fmt_ms([r['boundary_mIoU'] for r in runs])} | {thin} |"
            )
    if by_variant["fpn"] and by_variant["fapn"]:
        lines.append("")
        for key, label in (("mIoU", "val mIoU"), ("boundary_mIoU", "boundary mIoU")):
            diffs = paired_differences(by_variant, "fpn", "fapn", key)
            if diffs:
                interval = paired_interval(diffs)
                mean, std = mean_std(diffs)
                spread = f" ± {std:.2f}" if len(diffs) > 1 else ""
                text = f"FaPN minus FPN, {label}, paired by seed: {mean:+.2f}{spread} over {len(diffs)} seed(s)"
                if interval is not None:
                    beyond = interval[0] > 0 or interval[1] < 0
                    text += f", 95% interval {fmt_interval(diffs)} ({'' if beyond else 'not '}beyond seed noise)"
                lines.append(f"- {text}.")
    return "\n".join(lines)


def replace_between(path: Path, begin: str, end: str, content: str) -> bool:
    """Replace the text between the ``begin`` and ``end`` markers of ``path``; False (file untouched) when the
    file lacks them."""
    text = path.read_text() if path.is_file() else ""
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{content}\n{end}{tail}")
    return True


def row_ordering(by_variant: dict[str, list[dict[str, Any]]], key: str = "mIoU") -> str:
    """Table 1's rows ordered by mean ``key``, each with mean ± std (n); ``>`` where the row beats the next one
    beyond seed noise (the 95% paired-t interval of their per-seed differences excludes 0), ``≳`` where it does
    not (or fewer than two seeds pair up)."""
    rows = sorted(
        ((v, mean_std([r[key] for r in by_variant[v]])) for v in VARIANTS if by_variant[v]),
        key=lambda item: -item[1][0],
    )
    text = ""
    for index, (variant, (mean, std)) in enumerate(rows):
        n = len(by_variant[variant])
        text += f"{SHORT[variant]} ({mean:.1f}" + (f" ± {std:.1f}" if n > 1 else "") + f", n={n})"
        if index + 1 < len(rows):
            interval = paired_interval(paired_differences(by_variant, rows[index + 1][0], variant, key))
            clear = interval is not None and interval[0] > 0
            text += " > " if clear else " ≳ "
    return text


def goal_lines(by_variant: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The issue's goals, each with its measured figure and met / missed / not yet measurable."""
    lines = ["**Goals** (from the issue; measured, met or not):", ""]
    fapn, fpn = by_variant["fapn"], by_variant["fpn"]
    if fapn:
        mean = mean_std([r["mIoU"] for r in fapn])[0]
        lines.append(
            f"- FaPN mean val mIoU >= 55: {mean:.1f} over {len(fapn)} seed(s), **{'met' if mean >= 55 else 'missed'}**."
        )
    for key, label in (("mIoU", "val mIoU"), ("boundary_mIoU", "boundary mIoU")):
        diffs = paired_differences(by_variant, "fpn", "fapn", key) if fapn and fpn else []
        if diffs:
            mean, std = mean_std(diffs)
            verdict = "met" if mean >= 1.0 else "missed"
            state = f"**{verdict}**" if len(diffs) >= 3 else f"{verdict} so far ({len(diffs)} of 3 seeds)"
            # two decimals: the verdict compares the unrounded mean with 1.0 (0.96 must not read "+1.0, missed")
            spread = f" ± {std:.2f}" if len(diffs) > 1 else " (one seed: no spread yet)"
            interval = paired_interval(diffs)
            if interval is not None:
                beyond = interval[0] > 0 or interval[1] < 0
                spread += f", 95% interval {fmt_interval(diffs)}, {'' if beyond else 'not '}beyond seed noise"
            lines.append(f"- FaPN minus FPN >= 1.0 {label}: {mean:+.2f}{spread}, {state}.")
        else:
            lines.append(f"- FaPN minus FPN >= 1.0 {label}: not yet measurable (no seed with both models).")
    for variant in ("fpn", "fapn"):
        if by_variant[variant]:
            worst = {c: min(r["per_class_iou"][c] for r in by_variant[variant]) for c in THIN_CLASSES}
            zero = [c for c, v in worst.items() if v <= 0]
            lines.append(
                f"- {SHORT[variant]}: thin classes above 0 IoU in every seed: "
                + ("yes" if not zero else f"no ({', '.join(zero)})")
                + " (lowest: "
                + ", ".join(f"{c} {v:.1f}" for c, v in worst.items())
                + ")."
            )
    lines.append(f"- Table 1's rows by val mIoU: {row_ordering(by_variant)}.")
    lines.append(f"- By boundary mIoU: {row_ordering(by_variant, 'boundary_mIoU')}.")
    return lines


RESULTS_DIR = REPO / "benchmarks" / "results" / "camvid"


def figure1_frames(data: Path, names: list[str], count: int = 4, min_gap: int = 10) -> list[int]:
    """The val frames with the most ground-truth pixels of the thin classes, at least ``min_gap`` frames apart
    (val is a video: neighbours are near-duplicates). Depends on the ground truth only, not on any model."""
    import numpy as np
    from PIL import Image

    classes = json.loads((data / "classes.json").read_text())["classes"]
    thin_ids = [classes.index(c) for c in THIN_CLASSES]
    counts = []
    for name in names:
        label = np.asarray(Image.open(data / "valannot" / f"{name}.png"))
        counts.append(int(np.isin(label, thin_ids).sum()))
    picked: list[int] = []
    for index in sorted(range(len(names)), key=lambda i: (-counts[i], i)):
        if all(abs(index - p) >= min_gap for p in picked):
            picked.append(index)
        if len(picked) == count:
            break
    return sorted(picked)


def draw_pictures(by_variant: dict[str, list[dict[str, Any]]], results: Path, data: Path, images: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from PIL import Image

    images.mkdir(parents=True, exist_ok=True)
    info = json.loads((data / "classes.json").read_text())
    classes, palette = info["classes"], np.array(info["palette"], dtype=np.uint8)
    colour_lut = np.zeros((256, 3), dtype=np.uint8)
    colour_lut[: len(palette)] = palette
    legend = [Patch(facecolor=palette[i] / 255, label=name) for i, name in enumerate(classes)]
    written = []

    # validation mIoU against iterations
    fig, ax = plt.subplots(figsize=(7, 4))
    for variant in VARIANTS:
        runs = [r for r in by_variant[variant] if r["validation_curve"]]
        if not runs:
            continue
        its = [p["iteration"] for p in runs[0]["validation_curve"]]
        curves = np.array([[p["mIoU"] for p in r["validation_curve"]][: len(its)] for r in runs])
        mean = curves.mean(axis=0)
        (line,) = ax.plot(its, mean, marker="o", label=f"{SHORT[variant]} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(its, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration (batch 8)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("CamVid val mIoU during training (mean over seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(images / "camvid_study_curves.png", dpi=110)
    plt.close(fig)
    written.append("camvid_study_curves.png")

    # per-class IoU, FPN against FaPN
    shown = [v for v in ("fpn", "fapn") if by_variant[v]]
    if shown:
        fig, ax = plt.subplots(figsize=(10, 4))
        x = np.arange(len(classes))
        width = 0.8 / len(shown)
        for k, variant in enumerate(shown):
            values = np.array([[r["per_class_iou"][c] for c in classes] for r in by_variant[variant]])
            offset = (k - (len(shown) - 1) / 2) * width
            errors = values.std(axis=0, ddof=1) if len(values) > 1 else None
            ax.bar(
                x + offset,
                values.mean(axis=0),
                width,
                yerr=errors,
                capsize=2,
                label=f"{SHORT[variant]} (n={len(values)})",
            )
            for row in values:
                ax.plot(x + offset, row, "k.", markersize=3)
        ax.set_xticks(x, classes, rotation=30, ha="right")
        ax.set_ylabel("val IoU (%)")
        ax.set_title("CamVid per-class IoU: mean over seeds, bars = std, dots = seeds")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(images / "camvid_study_per_class.png", dpi=110)
        plt.close(fig)
        written.append("camvid_study_per_class.png")

    # the supplementary's Figure 1: image | ground truth | FPN | FPN+FAM | FaPN, seed-0 models
    packs = {v: results / f"{v}_seed0_predictions.npz" for v in FIGURE1_VARIANTS}
    if all(p.is_file() for p in packs.values()):
        loaded = {v: np.load(p) for v, p in packs.items()}
        names = [str(n) for n in loaded["fpn"]["names"]]
        frames = figure1_frames(data, names)
        columns = ["image", "ground truth", *[SHORT[v] for v in FIGURE1_VARIANTS]]
        fig, axes = plt.subplots(len(frames), len(columns), figsize=(2.6 * len(columns), 2.0 * len(frames) + 0.8))
        for row, index in enumerate(frames):
            name = names[index]
            panels = [
                np.asarray(Image.open(data / "val" / f"{name}.png").convert("RGB")),
                colour_lut[np.asarray(Image.open(data / "valannot" / f"{name}.png"))],
            ]
            panels += [colour_lut[loaded[v]["labels"][index]] for v in FIGURE1_VARIANTS]
            for col, panel in enumerate(panels):
                ax = axes[row, col]
                ax.imshow(panel)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(columns[col])
            axes[row, 0].set_ylabel(name, fontsize=7)
        fig.legend(
            handles=[*legend, Patch(facecolor="black", label="void (ignored)")],
            loc="lower center",
            ncol=6,
            fontsize=8,
            frameon=False,
        )
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(images / "camvid_study_figure1.png", dpi=110)
        # 256 colours, as the README pictures: the photo column makes the full-colour PNG about 580 KB
        quantized = Image.open(images / "camvid_study_figure1.png").convert("RGB").quantize(256)
        quantized.save(images / "camvid_study_figure1.png", optimize=True)
        plt.close(fig)
        written.append("camvid_study_figure1.png")
    return written


def write_report(args: argparse.Namespace) -> int:
    results = Path(args.results)
    by_variant = load_results(results)
    if not any(by_variant.values()):
        raise SystemExit(f"no results in {results}; run the study first")
    data = Path(args.data)
    size = (180, 240)
    complexity = complexity_rows(len(next(r for v in by_variant.values() for r in v)["per_class_iou"]), size)
    report = markdown_report(by_variant, complexity, size)
    report += "\n".join(["", *small_object_report(by_variant, results, data)]) if data.is_dir() else ""
    written = draw_pictures(by_variant, results, data, Path(args.docs) / "images") if data.is_dir() else []
    pictures = {
        "camvid_study_figure1.png": "The supplementary's Figure 1 on CamVid val (seed-0 models). Frames: the four "
        "val frames with the most ground-truth pixels of pole, sign, pedestrian and "
        "bicyclist, at least 10 frames apart (a rule on the ground truth only). CamVid frames: Brostow, Fauqueur, "
        "Cipolla, Pattern Recognition Letters 2009, from the SegNet tutorial's copy (CC BY-NC 4.0).",
        "camvid_study_per_class.png": "Per-class IoU, FPN against FaPN.",
        "camvid_study_curves.png": "Validation mIoU against iterations.",
    }
    for name in written:
        report += f"\n\n{pictures[name]}\n\n![{name}](images/{name})"
    doc = Path(args.docs) / "benchmarks.md"
    if replace_between(doc, MARK_BEGIN, MARK_END, report):
        print(f"updated {doc} and {len(written)} pictures in {Path(args.docs) / 'images'}")
    else:
        print(f"{doc} has no {MARK_BEGIN} ... {MARK_END} section; the report follows:\n")
    readme = Path(args.docs).parent / "README.md"
    if replace_between(readme, README_BEGIN, README_END, readme_summary(by_variant)):
        print(f"updated the study's summary in {readme}")
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global RESULTS_DIR
    RESULTS_DIR = Path(args.results)
    if args.missing:
        todo = missing_runs(Path(args.results))
        print("\n".join(f"{r.variant}:{r.seed}" for r in todo) if todo else "none: the plan is complete")
        return 0
    if args.report:
        return write_report(args)
    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
