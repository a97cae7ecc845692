"""``fapn profile``: parameters and MACs of a model, and Table 1 of the supplementary reproduced."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fapn.cli.common import HelpFormatter

BACKBONE_CHOICES = ("resnet18", "resnet34")
NECK_CHOICES = ("fpn", "fpn+fam", "fpn+fam+fsm", "fapn")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="parameters and MACs of a model; --table1 reproduces the supplementary's Table 1",
        description=(
            "Count parameters and multiply-accumulates (MACs) of a model (the real-time FaPN by default, or "
            "any registered one with --model, on any backbone including timm:<name>) at any input size, in "
            "two conventions: 'paper' (fvcore's: convolutions, matmuls, norms, upsampling; a deformable conv "
            "counts 0, as in the paper's Table 1) and 'full' (the deformable conv counted: C_out*C_in*9 for "
            "the product plus 5*C_in*9 for bilinear sampling and mask, per output pixel). Counting runs on the "
            "'meta' device: no arithmetic, instant at any size."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--table1",
        action="store_true",
        help="profile the four necks of the ablation (ResNet-18, 19 classes, 768x1536) against the paper's Table 1; "
        "exit code 1 if a row is off by more than 0.05M parameters or 0.3 GMAC",
    )
    parser.add_argument(
        "--model",
        default="realtime_fapn",
        help="a registered semantic segmentation model, e.g. maskformer_fapn, maskformer_fpn, semantic_fpn",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help=f"backbone: {', '.join(BACKBONE_CHOICES)}, resnet50, resnet101 or timm:<name> such as "
        "timm:convnext_tiny (default: the model's own, resnet18 for realtime_fapn)",
    )
    parser.add_argument(
        "--neck",
        "--variant",
        dest="neck",
        default="fapn",
        choices=NECK_CHOICES,
        help="the neck of a factory (fapn, fpn; realtime_fapn also fpn+fam, fpn+fam+fsm: Table 1's rows); "
        "--variant, its earlier name, still works",
    )
    parser.add_argument("--num-classes", type=int, default=19, help="output classes")
    parser.add_argument("--weights", default=None, help="profile the model of this checkpoint instead")
    parser.add_argument(
        "--input-size",
        nargs="+",
        default=["768x1536"],
        metavar="HxW",
        help="input height x width (the older form 'H W' is accepted too)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="input batch size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _table1(as_json: bool) -> int:
    from fapn.profiling.table1 import GMACS_TOLERANCE, PARAMS_TOLERANCE_M, TABLE1_INPUT_SHAPE, table1_rows

    rows = table1_rows()
    ok = all(row.params_ok and row.macs_ok for row in rows)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "neck": r.neck,
                        "paper": {"miou": r.paper_miou, "params_m": r.paper_params_m, "gflops": r.paper_gflops},
                        "ours": {
                            "params": r.ours.params,
                            "gmacs_paper": round(r.ours.gmacs_paper, 4),
                            "gmacs_full": round(r.ours.gmacs_full, 4),
                        },
                        "params_ok": r.params_ok,
                        "macs_ok": r.macs_ok,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0 if ok else 1
    _, _, h, w = TABLE1_INPUT_SHAPE
    print(f"Table 1 of the supplementary: real-time FaPN, ResNet-18, 19 classes, input {h}x{w}")
    print("paper = MACs as fvcore counts them (deformable conv not counted); full = deformable conv counted\n")
    header = (
        f"{'method':<22} {'paper mIoU':>10} {'paper M':>8} {'ours M':>8} {'paper G':>8} "
        f"{'ours G (paper)':>15} {'ours G (full)':>14}  match"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        match = "yes" if r.params_ok and r.macs_ok else "NO"
        print(
            f"{r.paper_name:<22} {r.paper_miou:>10.1f} {r.paper_params_m:>8.1f} {r.ours.params_m:>8.3f} "
            f"{r.paper_gflops:>8.1f} {r.ours.gmacs_paper:>15.2f} {r.ours.gmacs_full:>14.2f}  {match}"
        )
    print(
        f"\ntolerances: {PARAMS_TOLERANCE_M}M parameters, {GMACS_TOLERANCE} GMAC (paper convention). "
        f"{'All rows match.' if ok else 'Some rows do NOT match.'}"
    )
    print("mIoU is the paper's (Cityscapes val, ImageNet-pretrained backbone); we do not reproduce it here.")
    return 0 if ok else 1


def run(args: argparse.Namespace) -> int:
    if args.table1:
        return _table1(args.json)
    from fapn.cli.common import size_from_values
    from fapn.profiling.complexity import profile_model

    h, w = size_from_values(args.input_size, "--input-size")
    if args.batch_size < 1 or min(h, w) < 32:
        raise ValueError(
            f"--batch-size must be >= 1 and --input-size at least 32x32, got {args.batch_size} and {h}x{w}"
        )
    if args.weights:
        from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint

        model = build_model_from_checkpoint(load_checkpoint(args.weights))
        name = args.weights
    else:
        import inspect

        import torch

        from fapn.models import get_model_builder

        builder = get_model_builder(args.model)
        kwargs: dict[str, Any] = {"num_classes": args.num_classes}
        if args.backbone is not None:
            kwargs["backbone"] = args.backbone
        if "neck" in inspect.signature(builder).parameters:
            kwargs["neck"] = args.neck
        with torch.device("meta"):  # no weights allocated: instant for any model size
            model = builder(**kwargs)
        name = f"{args.model}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    c = profile_model(model, (args.batch_size, 3, h, w))
    if args.json:
        print(
            json.dumps(
                {
                    "model": name,
                    "input_shape": list(c.input_shape),
                    "params": c.params,
                    "gmacs_paper": c.gmacs_paper,
                    "gmacs_full": c.gmacs_full,
                }
            )
        )
    else:
        print(f"{name} at input {tuple(c.input_shape)}")
        print(f"  parameters          {c.params_m:10.3f} M ({c.params:,})")
        print(f"  GMAC, paper's conv. {c.gmacs_paper:10.2f}   (fvcore's convention; deformable conv not counted)")
        print(f"  GMAC, full          {c.gmacs_full:10.2f}   (deformable conv counted)")
    return 0
