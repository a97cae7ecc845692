"""``fapn train``: train a model from a recipe (YAML config), on one process or under ``torchrun``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fapn.cli.common import THREADS_HELP, add_overrides_argument, add_threads_argument, config_task, task_engine

__all__ = ["register", "run"]

EPILOG = """\
examples:
  fapn configs                                   # list the shipped recipes
  fapn train semseg/camvid_r18_fapn --set data.root=../shared/data/camvid-half
  fapn train semseg/camvid_r18_fapn --set data.root=PATH --check-data      # read every file, list the bad ones
  fapn train semseg/cityscapes_r18_fapn --set model.neck=fpn --output-dir runs/ablation_fpn
  fapn train semseg/cityscapes_r18_fapn --output-dir runs/ablation_fpn --resume   # continue exactly from last.pt
  torchrun --nproc_per_node 4 -m fapn train semseg/cityscapes_r18_fapn   # DDP, global batch split over GPUs

A folder that holds a run is never written over silently: continue it with --resume (the recipe saved in its
last.pt is used; a --set that changes it is an error, except where and how the run executes: data.root,
data.num_workers, data.skip_unreadable, train.threads, train.device, the log/checkpoint/eval periods) or
replace it with --overwrite.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a recipe (YAML config)",
        description=(
            "Train from a recipe: a shipped config name (see 'fapn configs') or a YAML file. Semantic "
            "segmentation recipes (task: semseg) train the registry model the recipe names with SGD + "
            "poly/multi-step schedule, periodic validation, TensorBoard + JSONL logs and atomic last.pt/best.pt "
            "checkpoints; detection, instance and panoptic recipes go to the detection engine. Under torchrun, "
            "runs DDP (semantic segmentation)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="shipped config name (e.g. semseg/camvid_r18_fapn) or path to a YAML file")
    add_overrides_argument(
        parser, help="override a config value, e.g. --set optim.lr=0.005 --set train.iterations=1000 (repeatable)"
    )
    parser.add_argument("--output-dir", default=None, help="where checkpoints and logs go (default: train.output_dir)")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUTPUT_DIR exactly, from its last.pt and with its saved recipe",
    )
    runs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in OUTPUT_DIR (its checkpoints, logs and metrics are deleted)",
    )
    add_threads_argument(parser, help=f"{THREADS_HELP}; overrides train.threads")
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars: one plain line per log record (for log files)",
    )
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="read every image and label of both splits, list the unreadable ones and exit "
        "(1 if any); trains nothing (semantic segmentation recipes)",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="same as --set data.skip_unreadable=true: read every file at start-up and train "
        "without the unreadable ones, listed in OUTPUT_DIR/skipped_files.txt",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = config_task(args.config)
    engine = task_engine(task)
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if task != "semseg" and (args.check_data or args.skip_unreadable):
        raise ValueError("--check-data and --skip-unreadable are for semantic segmentation recipes")
    if args.skip_unreadable:
        overrides.append("data.skip_unreadable=true")
    if args.check_data:
        return _check_data(args.config, engine.load("config"), overrides, args.progress)
    result = engine.load("train")(
        args.config, overrides, args.output_dir, args.resume, overwrite=args.overwrite, progress=args.progress
    )
    if task == "semseg":
        if int(os.environ.get("RANK", "0")) == 0:
            from fapn.metrics import format_table

            print(format_table(result["metrics"], result["metrics"]["boundary"]))
            print(f"checkpoints and logs: {result['output_dir']} ({result['seconds']:.0f} s)")
        return 0
    from fapn.metrics.coco import format_coco_metrics

    if text := format_coco_metrics(result):
        print(text)
    checkpoint = Path(result["output_dir"]) / "model_final.pt"
    print(f"trained {result['iterations']} iterations in {result['train_seconds']:.0f} s; checkpoint: {checkpoint}")
    return 0


def _check_data(config: str, config_class: type, overrides: list[str], progress: bool) -> int:
    """``--check-data``: read every file of the recipe's splits and list the unreadable ones (exit code 1 if any)."""
    from fapn.config import load_config
    from fapn.engine.semseg.data import check_data

    bad = check_data(load_config(config, config_class, overrides), progress=progress)
    count = sum(len(b) for b in bad.values())
    for split, files in bad.items():
        print(f"{split}: {len(files)} unreadable file(s)" + (":" if files else ""))
        for b in files:
            print(f"  {b}")
    print(f"{count} unreadable file(s)" if count else "every file reads")
    return 1 if count else 0
