"""``fapn score``: score saved prediction PNGs against a dataset's ground truth (no model needed)."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score saved prediction PNGs (mIoU like the official evaluators)",
        description=(
            "Score a folder of prediction PNGs. Cityscapes: the official submission format (label ids, full "
            "resolution, one file per image named after it, as 'fapn eval --save-predictions' writes); the "
            "mIoU equals cityscapesscripts', and the four official numbers (IoU and iIoU for classes and for "
            "categories; iIoU needs the *_gtFine_instanceIds.png beside the labels) are printed too ('fapn "
            "predict' writes train ids, not a submission). Other datasets: one index PNG (class ids) per image, "
            "NAME.png ('fapn eval --save-predictions') or NAME_label.png ('fapn predict', whose folder it reads "
            "as it is). "
            "Prints the small-object recall too (ground-truth connected components of thing-like classes found, "
            "by COCO size bucket). "
            "Warns when the predictions never use the ground truth's highest classes (a model trained with "
            "fewer classes)."
        ),
        epilog="example:\n  fapn score --dataset cityscapes --gt-root $FAPN_DATA/cityscapes --split val --pred preds/ --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        required=True,
        choices=["cityscapes", "coco_stuff", "ade20k", "camvid", "folder"],
        help="ground-truth layout",
    )
    parser.add_argument("--gt-root", required=True, help="dataset root folder, in its own layout")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--pred", required=True, help="folder of prediction PNGs")
    parser.add_argument(
        "--boundary-width",
        type=int,
        default=None,
        metavar="PIXELS",
        help="pixels of the boundary band (default: the recipes' eval.boundary_width default, "
        "fapn.metrics.DEFAULT_BOUNDARY_WIDTH = 2)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (mIoU in percent)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fapn.cli.common import warn
    from fapn.engine.semseg.score import score_predictions
    from fapn.metrics import DEFAULT_BOUNDARY_WIDTH, format_table

    width = DEFAULT_BOUNDARY_WIDTH if args.boundary_width is None else args.boundary_width
    scores = score_predictions(args.dataset, args.gt_root, args.split, args.pred, width, progress=not args.json)
    if scores.get("class_count_warning"):
        warn(scores["class_count_warning"])
    if args.json:
        print(json.dumps(scores))
    else:
        print(format_table(scores, scores["boundary"]))
        print(
            f"mIoU {scores['mIoU']:.2f}, boundary mIoU ({width} px) {scores['boundary']['mIoU']:.2f} "
            f"over {scores['num_images']} images"
        )
        if scores.get("small_objects"):
            from fapn.metrics.small_objects import format_small_object_recall

            print(format_small_object_recall(scores["small_objects"]))
        if scores.get("cityscapes"):
            from fapn.metrics.cityscapes import format_cityscapes

            print(f"Cityscapes: {format_cityscapes(scores['cityscapes'])}")
    return 0
