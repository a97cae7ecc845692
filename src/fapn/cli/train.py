"""``fapn train``: train a model from a recipe (YAML config), on one process or under ``torchrun``."""

from __future__ import annotations

import argparse

__all__ = ["register", "run", "DETECTION_TASKS", "config_task"]

DETECTION_TASKS = ("detection", "instance", "panoptic")

EPILOG = """\
examples:
  fapn configs                                   # list the shipped recipes
  fapn train semseg/camvid_r18_fapn --set data.root=../shared/data/camvid-half
  fapn train semseg/cityscapes_r18_fapn --set model.variant=fpn --output-dir runs/ablation_fpn
  fapn train my_recipe.yaml --resume             # continue exactly from OUTPUT_DIR/last.pt
  torchrun --nproc_per_node 4 -m fapn train semseg/cityscapes_r18_fapn   # DDP, global batch split over GPUs
"""


def config_task(config: str) -> str:
    """The top-level ``task`` key of a config (``semseg`` when absent)."""
    from fapn.config import load_yaml

    return str(load_yaml(config).get("task", "semseg"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a recipe (YAML config)",
        description=(
            "Train from a recipe: a shipped config name (see 'fapn configs') or a YAML file. Semantic "
            "segmentation recipes (task: semseg) train realtime_fapn with SGD + poly/multi-step schedule, "
            "periodic validation, TensorBoard + JSONL logs and atomic last.pt/best.pt checkpoints; detection, "
            "instance and panoptic recipes go to the detection engine. Under torchrun, runs DDP."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="shipped config name (e.g. semseg/camvid_r18_fapn) or path to a YAML file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.005 --set train.iterations=1000 (repeatable)",
    )
    parser.add_argument("--output-dir", default=None, help="where checkpoints and logs go (default: train.output_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        task = config_task(args.config)
    except (FileNotFoundError, ValueError) as err:
        print(f"fapn train: error: {err}", file=sys.stderr)
        return 2
    if task in DETECTION_TASKS:
        from fapn.engine.detection import run_train as run_detection_train

        return run_detection_train(args.config, list(args.overrides), args.output_dir, args.resume)
    if task != "semseg":
        raise SystemExit(f"fapn train: config task {task!r} is unknown; expected semseg or one of {DETECTION_TASKS}")
    from fapn.engine.semseg_train import run_train

    try:
        return run_train(args.config, list(args.overrides), args.output_dir, args.resume)
    except (FileNotFoundError, ValueError) as err:  # bad config, data or checkpoint: say what, no traceback
        import sys

        print(f"fapn train: error: {err}", file=sys.stderr)
        return 2
