"""``fapn convert``: the authors' detectron2 FaPN checkpoints -> fapn state dicts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fapn.cli.common import HelpFormatter

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an authors' detectron2 FaPN checkpoint (.pth / .pkl) to fapn's modules",
        description=(
            "Read a detectron2 FaPN checkpoint (a .pth holding {'model': state_dict} or detectron2's .pkl) and map "
            "it to fapn's module names: the FaPN neck always (fan_align{2,3,4} -> merges, fpn_output{2,3,4} -> "
            "output_convs, fan_align5 -> top_lateral), the ResNet body and R-CNN heads when fapn.models.detection "
            "provides their converters. Every key that could not be mapped is listed. Writes {'model': "
            "state_dict, 'converted_from': SRC, 'unmapped_keys': [...]} (plus 'model_config' if --model-config)."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="the authors' checkpoint (.pth or .pkl)")
    parser.add_argument("--out", required=True, help="converted checkpoint (.pt)")
    parser.add_argument(
        "--neck-only", action="store_true", help="write only the neck, with fapn.necks.FaPN's keys (no prefix)"
    )
    parser.add_argument(
        "--model-config",
        default=None,
        metavar="JSON",
        help='builder kwargs stored as model_config, e.g. \'{"name": "detectron2_fapn_rcnn", "depth": 50}\'',
    )
    parser.add_argument(
        "--hub",
        action="store_true",
        help="write --out as a Hugging Face Hub folder (config.json + model.safetensors + model card; needs "
        '--model-config naming the full model, e.g. {"name": "detectron2_fapn_rcnn", "depth": 50, "num_classes": 81})',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fapn.checkpoint import save_checkpoint
    from fapn.convert import convert_detectron2_fapn, convert_fapn_neck, load_detectron2_checkpoint

    if args.hub and (args.model_config is None or args.neck_only):
        raise ValueError("--hub writes a whole model: it needs --model-config (and not --neck-only)")
    state = load_detectron2_checkpoint(args.src)
    try:
        model_config = json.loads(args.model_config) if args.model_config else None
    except ValueError as err:
        raise ValueError(f"--model-config is not valid JSON: {err}") from None
    if args.neck_only:
        mapped, neck_unmapped = convert_fapn_neck(state)
        used = {k for k in state if k.startswith("backbone.") and not k.startswith("backbone.bottom_up.")}
        used -= set(neck_unmapped)
        unmapped = [k for k in state if k not in used]
    else:
        mapped, unmapped = convert_detectron2_fapn(state)
    if not mapped:
        print(
            f"fapn: error: no FaPN key found in {args.src} (expected backbone.fan_align*, backbone.fpn_output*)",
            file=sys.stderr,
        )
        return 1
    checkpoint: dict[str, Any] = {"model": mapped, "converted_from": str(args.src), "unmapped_keys": unmapped}
    if model_config is not None:
        checkpoint["model_config"] = model_config
    if args.hub:
        from fapn.hub import save_pretrained

        recipe = f"Converted from the authors' detectron2 checkpoint {args.src} with `fapn convert --hub`."
        save_pretrained(checkpoint, args.out, recipe=recipe)
    else:
        save_checkpoint(checkpoint, args.out)
    print(f"mapped {len(mapped)} of {len(state)} tensors from {args.src} -> {args.out}")
    if unmapped:
        print(f"{len(unmapped)} keys not mapped:")
        for key in unmapped:
            print(f"  {key} {tuple(state[key].shape)}")
    return 0
