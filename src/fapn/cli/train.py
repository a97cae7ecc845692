"""``fapn train``: train a model from a recipe (YAML config), on one process or under ``torchrun``."""

from __future__ import annotations

import argparse

from fapn.cli.common import DETECTION_TASKS, THREADS_HELP, add_overrides_argument, add_threads_argument, config_task

__all__ = ["register", "run"]

EPILOG = """\
examples:
  fapn configs                                   # list the shipped recipes
  fapn train semseg/camvid_r18_fapn --set data.root=../shared/data/camvid-half
  fapn train semseg/camvid_r18_fapn --set data.root=PATH --check-data      # read every file, list the bad ones
  fapn train semseg/cityscapes_r18_fapn --set model.variant=fpn --output-dir runs/ablation_fpn
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
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if task in DETECTION_TASKS:
        if args.check_data or args.skip_unreadable:
            raise ValueError("--check-data and --skip-unreadable are for semantic segmentation recipes")
        from fapn.engine.detection.train import run_train as run_detection_train

        return run_detection_train(
            args.config, overrides, args.output_dir, args.resume, overwrite=args.overwrite, progress=args.progress
        )
    if task != "semseg":
        raise ValueError(f"config task {task!r} is unknown; expected semseg or one of {', '.join(DETECTION_TASKS)}")
    if args.skip_unreadable:
        overrides.append("data.skip_unreadable=true")
    from fapn.engine.semseg.train import run_train

    return run_train(
        args.config,
        overrides,
        args.output_dir,
        args.resume,
        overwrite=args.overwrite,
        progress=args.progress,
        check_data_only=args.check_data,
    )
