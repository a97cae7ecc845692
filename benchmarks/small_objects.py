"""Small objects: Faster R-CNN, Mask R-CNN and Panoptic FPN, each with FPN and with FaPN, over seeds, on the
synthetic COCO-format shapes in their small-object regime; the supplementary's Figure 3 from the trained models.

The data: :data:`fapn.data.synthetic_coco.SMALL_OBJECT_REGIME` (160x192 images, up to 10 things each, about three
quarters of them under 32^2 pixels at the training size; the generator's docstring has the counts), ``--num-train``
training and ``--num-val`` validation images, generated once (data seed 0) and shared by every run. The models:
the shipped synthetic recipes (``detection/synthetic_mask_rcnn_R_18_FaPN``, with ``task=detection`` and
``model.detector=fasterrcnn`` for Faster R-CNN, and ``detection/synthetic_panoptic_fpn_R_18_FaPN``), ResNet-18
from scratch (the paper: ResNet-50 with ImageNet weights, COCO, 90K iterations of batch 16), trained at the
generated size; a (task, neck, seed) run changes only ``model.neck`` and ``train.seed`` (which fixes the
initialisation and the data order; FPN and FaPN of one seed see the same batches).

Each run writes ``RESULTS/{task}_{neck}_seed{seed}.json``: the task, neck, seed, budget, time, the data's object
counts by size, every figure ``fapn eval`` gives for the task (pycocotools' box and mask AP with AP by size; PQ,
SQ, RQ for all, things, stuff and things by size) and the same flattened under names that say what they are
(``bbox_AP_small``, ``segm_AP_small``, ``PQ_things_small``, ...). Checkpoints stay in ``--work-dir``. When the six
models of the figure seed (the lowest) are there, ``fapn compare --figure3`` draws Figure 3 from them into
``--figure``: the validation images with the most ground-truth objects under 32^2 pixels, those objects framed.
``--report`` writes the table of docs/benchmarks.md (between the ``small-objects`` markers): means, the seed spread
and FaPN minus FPN paired by seed with its 95% interval.

Usage:
    python benchmarks/small_objects.py --iterations 600 --seeds 0 1 --jobs 2 --threads 1   # the study
    python benchmarks/small_objects.py --report
    nice -n 10 python benchmarks/small_objects.py --iterations 3 --num-train 8 --num-val 4 --seeds 0 \\
        --work-dir /tmp/so_tiny --results /tmp/so_tiny/results --figure /tmp/so_tiny/figure3.png  # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from camvid_ablation.report import replace_between
from camvid_ablation.stats import fmt_interval, fmt_ms, mean_std, paired_interval

REPO = Path(__file__).resolve().parents[1]
TASKS = ("detection", "instance", "panoptic")
NECKS = ("fpn", "fapn")
TASK_LABELS = {"detection": "Faster R-CNN", "instance": "Mask R-CNN", "panoptic": "Panoptic FPN"}
NECK_LABELS = {"fpn": "FPN", "fapn": "FaPN"}
RECIPES = {
    "detection": ("detection/synthetic_mask_rcnn_R_18_FaPN", ("task=detection", "model.detector=fasterrcnn")),
    "instance": ("detection/synthetic_mask_rcnn_R_18_FaPN", ()),
    "panoptic": ("detection/synthetic_panoptic_fpn_R_18_FaPN", ()),
}
# the rows of the report: (label, flat key) per task
REPORT_ROWS = {
    "detection": (("box AP", "bbox_AP"), ("box AP small", "bbox_AP_small"), ("box AP medium", "bbox_AP_medium")),
    "instance": (
        ("box AP", "bbox_AP"),
        ("mask AP", "segm_AP"),
        ("box AP small", "bbox_AP_small"),
        ("mask AP small", "segm_AP_small"),
        ("mask AP medium", "segm_AP_medium"),
    ),
    "panoptic": (
        ("PQ", "PQ"),
        ("PQ things", "PQ_things"),
        ("PQ stuff", "PQ_stuff"),
        ("PQ things small", "PQ_things_small"),
        ("SQ things small", "SQ_things_small"),
        ("RQ things small", "RQ_things_small"),
        ("PQ things medium", "PQ_things_medium"),
        ("mask AP small", "segm_AP_small"),
    ),
}
MARK_BEGIN, MARK_END = "<!-- small-objects:begin -->", "<!-- small-objects:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--necks", nargs="+", choices=NECKS, default=list(NECKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--iterations", type=int, default=600, help="training iterations per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=256, help="synthetic training images")
    parser.add_argument("--num-val", type=int, default=64, help="synthetic validation images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each its own process)")
    parser.add_argument("--work-dir", default="/tmp/fapn-small-objects", help="run folders (checkpoints, logs)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "small_objects"))
    parser.add_argument(
        "--figure", default=str(REPO / "docs" / "images" / "small_objects_figure3.png"), help="Figure 3 PNG"
    )
    parser.add_argument("--pick", type=int, default=3, help="groups (validation images) in Figure 3")
    parser.add_argument("--redo", action="store_true", help="train runs that already have a result file again")
    parser.add_argument("--figure-only", action="store_true", help="only draw Figure 3 from the work folder")
    parser.add_argument("--report", action="store_true", help="write the docs/benchmarks.md table from the results")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="docs folder the report updates")
    parser.add_argument("--run", default=None, metavar="TASK:NECK:SEED", help=argparse.SUPPRESS)  # one run, internal
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------- running


def overrides(args: argparse.Namespace, task: str, neck: str, seed: int) -> list[str]:
    from fapn.data.synthetic_coco import SMALL_OBJECT_REGIME

    iterations = args.iterations
    data = {"num_train": args.num_train, "num_val": args.num_val, "seed": 0, **SMALL_OBJECT_REGIME}
    return [
        *RECIPES[task][1],
        f"model.neck={neck}",
        f"model.min_size=[{SMALL_OBJECT_REGIME['height']}]",
        f"model.max_size={max(SMALL_OBJECT_REGIME['height'], SMALL_OBJECT_REGIME['width'])}",
        f"train.seed={seed}",
        f"train.iterations={iterations}",
        f"train.batch_size={args.batch_size}",
        f"train.threads={args.threads}",
        "train.checkpoint_period=0",
        "train.eval_period=0",
        f"optim.warmup_iters={max(1, iterations // 10)}",
        f"optim.milestones=[{int(iterations * 0.8)}, {int(iterations * 0.93)}]",
        *(f"data.synthetic.{k}={v}" for k, v in data.items()),
    ]


def result_path(results: Path, task: str, neck: str, seed: int) -> Path:
    return results / f"{task}_{neck}_seed{seed}.json"


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def flatten(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The figures of one evaluation under plain names (``bbox_AP_small``, ``PQ_things_small``, ...); ``None``
    where pycocotools has no ground truth in a size range, or no segment at all falls in a PQ group."""
    flat: dict[str, float | None] = {}
    sizes = {"APs": "AP_small", "APm": "AP_medium", "APl": "AP_large"}
    for kind in ("bbox", "segm", "boundary"):
        for key, value in (metrics.get(kind) or {}).items():
            flat[f"{kind}_{sizes.get(key, key)}"] = _number(value)
    panoptic = metrics.get("panoptic") or {}
    groups = {"All": "", "Things": "_things", "Stuff": "_stuff"}
    groups.update({f"Things_{b}": f"_things_{b}" for b in ("small", "medium", "large")})
    for group, suffix in groups.items():
        empty = panoptic.get(f"{group}_n") == 0  # no segment of the group at all: no figure, not a PQ of 0
        for key in ("pq", "sq", "rq"):
            if f"{group}_{key}" in panoptic:
                flat[f"{key.upper()}{suffix}"] = None if empty else _number(panoptic[f"{group}_{key}"])
        if f"{group}_n" in panoptic:
            flat[f"categories{suffix or '_all'}"] = panoptic[f"{group}_n"]
    return flat


def object_counts(instances_json: Path) -> dict[str, Any]:
    """Objects of a COCO instances file by COCO size bucket, and per image."""
    from fapn.metrics.small_objects import size_bucket

    data = json.loads(instances_json.read_text())
    counts = {"small": 0, "medium": 0, "large": 0}
    for annotation in data["annotations"]:
        counts[size_bucket(annotation["area"])] += 1
    total = sum(counts.values())
    return {
        **counts,
        "objects": total,
        "images": len(data["images"]),
        "small_fraction": counts["small"] / total if total else None,
    }


def run_one(args: argparse.Namespace, task: str, neck: str, seed: int) -> int:
    """Train and evaluate one (task, neck, seed) and write its result file."""
    import torch

    from fapn.engine.detection import build_datasets, load_detection_config, train

    recipe = RECIPES[task][0]
    settings = overrides(args, task, neck, seed)
    cfg = load_detection_config(recipe, settings)
    out = Path(args.work_dir) / f"{task}_{neck}_seed{seed}"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    began = time.perf_counter()
    metrics = train(cfg, out, progress=False, overwrite=True)
    wall = time.perf_counter() - began
    datasets = build_datasets(cfg)
    result = {
        "task": task,
        "neck": neck,
        "seed": seed,
        "model": f"{TASK_LABELS[task]} R-18 {NECK_LABELS[neck]}",
        "recipe": recipe,
        "overrides": settings,
        "command": shlex.join([sys.executable, *sys.argv]),
        "iterations": metrics["iterations"],
        "batch_size": cfg.train.batch_size,
        "train_seconds": round(metrics["train_seconds"], 1),
        "seconds_per_iteration": round(metrics["train_seconds"] / max(1, metrics["iterations"]), 3),
        "wall_seconds": round(wall, 1),
        "started_utc": started,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "jobs": args.jobs,
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "data": {split: object_counts(Path(datasets[split].instances_json)) for split in ("train", "val")},
        **flatten(metrics),
        "metrics": metrics,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    result_path(results, task, neck, seed).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def run_study(args: argparse.Namespace) -> int:
    from fapn.engine.detection import build_datasets, load_detection_config

    results = Path(args.results)
    queue = [
        (task, neck, seed)
        for seed in args.seeds
        for task in args.tasks
        for neck in args.necks
        if args.redo or not result_path(results, task, neck, seed).is_file()
    ]
    # generate the data once, before parallel runs race for it
    for task in {t for t, _, _ in queue}:
        build_datasets(load_detection_config(RECIPES[task][0], overrides(args, task, "fapn", 0)))
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: dict[tuple[str, str, int], subprocess.Popen] = {}
    failures = []
    while queue or running:
        while queue and len(running) < args.jobs:
            task, neck, seed = key = queue.pop(0)
            command = [sys.executable, __file__, *sys.argv[1:], "--run", f"{task}:{neck}:{seed}"]
            log = Path(args.work_dir) / f"{task}_{neck}_seed{seed}.log"
            print(f"[{time.strftime('%H:%M:%S')}] start {task} {neck} seed {seed} (log {log})", flush=True)
            with open(log, "w") as handle:  # the child keeps its own descriptor
                running[key] = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        time.sleep(2)
        for key in [k for k, p in running.items() if p.poll() is not None]:
            code = running.pop(key).returncode
            if code:
                failures.append(key)
            task, neck, seed = key
            if code:
                print(f"{task} {neck} seed {seed} FAILED (exit {code})", flush=True)
            else:
                r = json.loads(result_path(results, task, neck, seed).read_text())
                shown = ", ".join(f"{k} {r[k]:.1f}" for _, k in REPORT_ROWS[task][:3] if r.get(k) is not None)
                print(
                    f"[{time.strftime('%H:%M:%S')}] done {task} {neck} seed {seed}: {r['iterations']} it. in "
                    f"{r['train_seconds']:.0f} s ({r['seconds_per_iteration']:.2f} s/it.); {shown}",
                    flush=True,
                )
    if failures:
        return 1
    draw_figure(args)
    return 0


def draw_figure(args: argparse.Namespace) -> None:
    """Figure 3 from the six models of the lowest seed, if all are in the work folder."""
    from fapn.cli.main import main as fapn_main
    from fapn.engine.detection import load_detection_config
    from fapn.engine.detection.data import data_root

    seed = min(args.seeds)
    weights = [Path(args.work_dir) / f"{t}_{n}_seed{seed}" / "model_final.pt" for t in TASKS for n in NECKS]
    if not all(w.is_file() for w in weights):
        print(f"Figure 3 needs the six models of seed {seed} in {args.work_dir}; not drawn")
        return
    cfg = load_detection_config(RECIPES["instance"][0], overrides(args, "instance", "fapn", seed))
    val = data_root(cfg) / "val"
    out = Path(args.work_dir) / "figure3"
    command = ["compare", "--figure3", "--weights", *map(str, weights), "--instances"]
    command += [str(val / "annotations" / "instances.json"), "--pick", str(args.pick), "--out", str(out)]
    command += ["--width", "288", "--threads", str(args.threads), str(val / "images")]
    print("fapn " + shlex.join(command))
    if fapn_main(command):
        raise SystemExit("fapn compare --figure3 failed")
    from PIL import Image

    figure = Path(args.figure)
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "figure3.png", figure)
    Image.open(figure).convert("RGB").quantize(256).save(figure, optimize=True)  # a third of the size
    print(f"Figure 3: {figure}")


# ----------------------------------------------------------------------------------------------- report


def load_results(results: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(t, n): [] for t in TASKS for n in NECKS}
    for path in sorted(results.glob("*_seed*.json")):
        try:
            result = json.loads(path.read_text())
            runs[result["task"], result["neck"]].append(result)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise SystemExit(f"{path} is not a small-object result ({type(error).__name__}: {error})") from None
    for entries in runs.values():
        entries.sort(key=lambda r: r["seed"])
    return runs


def paired(runs: dict[tuple[str, str], list[dict[str, Any]]], task: str, key: str) -> list[float]:
    """FaPN minus FPN per seed, for the seeds both have (a seed fixes both models' initialisation and batches)."""
    fpn = {r["seed"]: r.get(key) for r in runs[task, "fpn"]}
    return [
        r[key] - fpn[r["seed"]] for r in runs[task, "fapn"] if r.get(key) is not None and fpn.get(r["seed"]) is not None
    ]


def markdown_report(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    any_run = next(r for entries in runs.values() for r in entries)
    data = any_run["data"]
    lines = [
        "Generated by `python benchmarks/small_objects.py --report` from `benchmarks/results/small_objects/`; do "
        "not edit by hand.",
        "",
        f"Data: the synthetic shapes in their small-object regime, {data['train']['images']} training and "
        f"{data['val']['images']} validation images of 160x192; the validation set holds {data['val']['objects']} "
        f"objects, {data['val']['small']} small (< 32^2 px), {data['val']['medium']} medium, "
        f"{data['val']['large']} large. Models: ResNet-18 from scratch, {any_run['iterations']} iterations of batch "
        f"{any_run['batch_size']} (the paper: ResNet-50 from ImageNet on COCO, 90K iterations of batch 16). "
        "AP by size is pycocotools' own summary; PQ by size buckets matches and misses by the ground-truth area and "
        "false positives by their own (`fapn.metrics.panoptic`). Mean ± sample std over seeds (n); FaPN - FPN "
        "is paired by seed, with the 95% interval of its mean (t on the per-seed differences).",
        "",
        "| model | metric | FPN | FaPN | n | FaPN - FPN per seed | mean | 95% interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for task in TASKS:
        if not runs[task, "fpn"] and not runs[task, "fapn"]:
            continue
        for label, key in REPORT_ROWS[task]:
            values = {n: [r[key] for r in runs[task, n] if r.get(key) is not None] for n in NECKS}
            diffs = paired(runs, task, key)
            mean = f"{mean_std(diffs)[0]:+.1f}" if diffs else "-"
            lines.append(
                f"| {TASK_LABELS[task]} | {label} | {fmt_ms(values['fpn'])} | {fmt_ms(values['fapn'])} | "
                f"{len(diffs)} | {', '.join(f'{d:+.1f}' for d in diffs) or '-'} | {mean} | {fmt_interval(diffs)} |"
            )
            if "small" in key and len(diffs) >= 2:
                verdicts.append((TASK_LABELS[task], label, diffs))
    lines.append("")
    for model, label, diffs in verdicts:
        low, high = paired_interval(diffs) or (math.nan, math.nan)
        where = "FaPN higher" if low > 0 else "FPN higher" if high < 0 else "not beyond seed noise"
        lines.append(
            f"- {model}, {label}: FaPN - FPN {mean_std(diffs)[0]:+.1f}, 95% [{low:+.1f}, {high:+.1f}]: {where}."
        )
    if not verdicts:
        lines.append("- Fewer than two seeds with both necks: no interval, so no verdict on small objects yet.")
    seconds = [r["seconds_per_iteration"] for entries in runs.values() for r in entries]
    lines.append(
        f"\nTime: {min(seconds):.2f}-{max(seconds):.2f} s per iteration per run "
        f"({any_run['machine']['threads']} thread(s) each, {any_run['machine']['jobs']} run(s) at once, "
        f"{any_run['machine']['processor']})."
    )
    return "\n".join(lines)


def write_report(args: argparse.Namespace) -> int:
    runs = load_results(Path(args.results))
    if not any(runs.values()):
        raise SystemExit(f"no results in {args.results}; run the study first")
    report = markdown_report(runs)
    figure = Path(args.figure)
    if figure.is_file():
        report += (
            "\n\nThe supplementary's Figure 3 from the seed-"
            f"{min(r['seed'] for e in runs.values() for r in e)} models (`fapn compare --figure3`): per group one "
            "validation image (those with the most ground-truth objects under 32^2 pixels), columns boxes | "
            "instance masks | panoptic, FPN on top, FaPN below; the small ground-truth objects framed in yellow."
            f"\n\n![Figure 3]({os.path.relpath(figure, args.docs)})"
        )
    doc = Path(args.docs) / "benchmarks.md"
    if replace_between(doc, MARK_BEGIN, MARK_END, report):
        print(f"updated {doc}")
    else:
        print(f"{doc} has no {MARK_BEGIN} ... {MARK_END} section; the report follows:\n")
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run:
        task, neck, seed = args.run.split(":")
        return run_one(args, task, neck, int(seed))
    if args.report:
        return write_report(args)
    if args.figure_only:
        draw_figure(args)
        return 0
    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
