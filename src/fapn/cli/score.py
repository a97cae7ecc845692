"""``fapn score``: score saved prediction PNGs against a dataset's ground truth (no model needed)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score saved prediction PNGs (mIoU like the official evaluators)",
        description=(
            "Score a folder of prediction PNGs. Cityscapes: the official submission format (label ids, full "
            "resolution, one file per image named after it, as 'fapn eval --save-predictions' writes); the "
            "mIoU equals cityscapesscripts'. Other datasets: one index PNG (class ids) per image, NAME.png."
        ),
        epilog="example:\n  fapn score --dataset cityscapes --gt-root $FAPN_DATA/cityscapes --split val --pred preds/ --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True,
                        choices=["cityscapes", "coco_stuff", "ade20k", "camvid", "folder"], help="ground-truth layout")
    parser.add_argument("--gt-root", required=True, help="dataset root folder, in its own layout")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--pred", required=True, help="folder of prediction PNGs")
    parser.add_argument("--boundary-width", type=int, default=3, help="pixels of the boundary band (default: 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (mIoU in percent)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fapn.engine.semseg_score import score_predictions
    from fapn.metrics import format_table

    try:
        scores = score_predictions(args.dataset, args.gt_root, args.split, args.pred, args.boundary_width,
                                   progress=not args.json)
    except (FileNotFoundError, ValueError) as err:
        print(f"fapn score: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(scores))
    else:
        print(format_table(scores, scores["boundary"]))
        print(f"mIoU {scores['mIoU']:.2f} over {scores['num_images']} images")
    return 0
