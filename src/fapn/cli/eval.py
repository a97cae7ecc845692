"""``fapn eval``: evaluate a checkpoint on the validation split of its recipe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fapn.cli.common import (
    add_device_argument,
    add_overrides_argument,
    add_precision_argument,
    add_threads_argument,
    config_task,
    task_engine,
)

__all__ = ["register", "run"]

EPILOG = """\
examples:
  fapn eval semseg/camvid_r18_fapn --weights runs/camvid_r18_fapn/best.pt --set data.root=../shared/data/camvid-half
  fapn eval --weights fapn_demo/fapn/last.pt      # no recipe: the one stored in the checkpoint (the demo's data)
  fapn eval semseg/cityscapes_r18_fapn --weights best.pt --save-predictions preds/   # official submission PNGs
  fapn eval semseg/camvid_r18_fapn --weights best.pt --threads 1 --no-progress      # a busy machine, a log file
  fapn score --dataset cityscapes --gt-root $FAPN_DATA/cityscapes --split val --pred preds/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (mIoU, per-class IoU, boundary mIoU, small-object recall; box/mask AP, PQ, by size)",
        description=(
            "Evaluate a checkpoint on whole images at full size (no test-time augmentation unless --flip or "
            "--scales). Prints a per-class table and writes the scores as JSON. Semantic models: also the recall of "
            "ground-truth connected components of thing-like classes (pole, sign, person, car, ...) by COCO size "
            "bucket; detection models: COCO AP by size (pycocotools' APs/APm/APl); panoptic: PQ of things by size "
            "too. Warns when the checkpoint's classes are not the dataset's."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="shipped config name or YAML file (gives the dataset and split); default: the recipe stored in "
        "--weights, the data the model was trained on",
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="checkpoint written by fapn train (last.pt / best.pt), a hub folder or hf://OWNER/NAME",
    )
    add_overrides_argument(parser, help="override a config value, e.g. --set data.root=PATH (repeatable)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    parser.add_argument("--output", default=None, help="JSON file for the scores (default: next to --weights)")
    parser.add_argument(
        "--save-predictions",
        default=None,
        metavar="DIR",
        help="write one PNG per image (Cityscapes: label ids, the official submission format)",
    )
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped predictions")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="multi-scale testing factors")
    add_device_argument(parser, default=None)
    add_precision_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (for log files)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipe: Any = args.config
    if recipe is None:  # the checkpoint's own recipe, as a dict
        from fapn.engine.run_dir import saved_recipe

        recipe = saved_recipe(args.weights)
        task = str(recipe.get("task", "semseg"))
    else:
        task = config_task(recipe)
    run_eval = task_engine(task).load("evaluate")
    if task == "semseg":
        scores = run_eval(
            recipe,
            list(args.overrides),
            args.weights,
            split=args.split,
            save_predictions=args.save_predictions,
            flip=args.flip,
            scales=args.scales,
            device=args.device or "auto",
            threads=args.threads,
            progress=args.progress,
            precision=args.precision,
            on_warning=lambda message: print(f"fapn: warning: {message}", file=sys.stderr, flush=True),
        )
        _print_semseg_scores(scores)
    else:
        scores = run_eval(
            recipe, list(args.overrides), args.weights, device=args.device, threads=args.threads, progress=args.progress
        )
        from fapn.metrics.coco import format_coco_metrics

        if text := format_coco_metrics(scores):
            print(text)
    output_path = _output_path(args.weights, args.output)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(scores, indent=2))
    print(f"scores written to {output_path}")
    if task == "semseg" and args.save_predictions:
        print(f"predictions written to {args.save_predictions}")
    return 0


def _print_semseg_scores(scores: dict[str, Any]) -> None:
    from fapn.metrics import format_table
    from fapn.metrics.small_objects import format_small_object_recall

    print(format_table(scores, scores["boundary"]))
    shown = {
        k: "-" if v is None else f"{v:.2f}" for k, v in (("all", scores["mIoU"]), ("band", scores["boundary"]["mIoU"]))
    }
    print(f"mIoU {shown['all']}  boundary mIoU ({scores['boundary']['width']}px) {shown['band']}")  # None: no pixel
    if scores["small_objects"] is not None:
        print(format_small_object_recall(scores["small_objects"]))


def _output_path(weights: str, output: str | None) -> Path:
    """``--output``, else ``NAME_eval.json`` beside the weights (in the working folder for a Hub repo id)."""
    if output:
        return Path(output)
    if str(weights).startswith("hf://"):
        return Path(str(weights).rsplit("/", 1)[-1].replace("@", "_") + "_eval.json")
    return Path(weights).with_name(Path(weights).stem + "_eval.json")
