"""``fapn export``: ONNX (with ONNX DeformConv), TorchScript or torch.export files, checked against PyTorch."""

from __future__ import annotations

import argparse
from typing import Any

from fapn.cli.common import HelpFormatter, add_threads_argument, parse_size, run_without_grad

__all__ = ["register", "run"]

FORMATS = ("onnx", "torchscript", "exported-program")


def add_model_arguments(parser: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """``--weights`` or ``--model/--backbone/--neck/--num-classes``: a checkpoint or an untrained model."""
    source = parser.add_argument_group("model (a checkpoint, or an untrained model by name)")
    source.add_argument(
        "--weights",
        required=weights_required,
        help="checkpoint (.pt) written by 'fapn train', a hub folder or hf://OWNER/NAME",
    )
    source.add_argument("--model", default=None, help="builder name for an untrained model, e.g. realtime_fapn")
    source.add_argument("--backbone", default=None, help="backbone, e.g. resnet18")
    source.add_argument(
        "--neck",
        "--variant",
        dest="neck",
        default=None,
        help="neck: fapn or fpn (realtime_fapn also fpn+fam, fpn+fam+fsm: Table 1's rows); --variant, its earlier "
        "name, still works",
    )
    source.add_argument("--num-classes", type=int, default=None, help="output classes (untrained model)")
    source.add_argument("--deform-backend", default=None, help="deformable-conv backend for PyTorch")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX, TorchScript or torch.export, checked against PyTorch",
        description=(
            "Export a checkpoint (or an untrained model: --model realtime_fapn --neck fpn --num-classes 19) "
            "for deployment. ONNX uses opset >= 19 with the deformable conv as ONNX's native DeformConv "
            "(whatever PyTorch backend is in use), dynamic batch/height/width, and the checkpoint's class "
            "names, palette, mean and std as metadata. Every export is reloaded (onnxruntime for ONNX) and "
            "compared with PyTorch on random inputs; the command fails if the largest difference exceeds "
            '--tolerance times the output scale. ONNX needs the onnx extra: pip install "fapn[onnx]".'
        ),
        formatter_class=HelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="what to write")
    parser.add_argument("--out", required=True, help="output file (.onnx, .pt, .pt2)")
    parser.add_argument("--opset", type=int, default=19, help="ONNX opset (>= 19 for DeformConv)")
    parser.add_argument("--static", action="store_true", help="fixed input shape (--example-size) instead of dynamic")
    parser.add_argument(
        "--example-size", type=parse_size, default="64x96", metavar="HxW", help="input size used for tracing (batch 2)"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference to PyTorch")
    int8 = parser.add_argument_group("INT8 (ONNX only; onnxruntime static quantization, QDQ, per-channel weights)")
    int8.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="write an INT8 model calibrated on --calibration instead of the float one (DeformConv stays float)",
    )
    int8.add_argument("--calibration", default=None, metavar="DIR", help="folder (or glob) of calibration images")
    int8.add_argument("--calibration-limit", type=int, default=64, metavar="N", help="use at most N images")
    int8.add_argument(
        "--calibration-size", type=parse_size, default=None, metavar="HxW", help="resize them (default: as they are)"
    )
    int8.add_argument(
        "--min-agreement",
        type=float,
        default=0.9,
        help="fail when fewer pixels than this keep the float model's class on the calibration images",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def _run(args: argparse.Namespace) -> int:
    from fapn.cli.common import require_extra, setup_runtime
    from fapn.export import export_onnx, export_program, export_torchscript
    from fapn.inference.loading import load_model

    height, width = args.example_size
    if args.quantize and args.format != "onnx":
        raise ValueError("--quantize int8 needs --format onnx")
    if args.quantize and not args.calibration:
        raise ValueError("--quantize int8 needs --calibration DIR: a folder of images to calibrate the ranges on")
    if args.format == "onnx":  # before building anything: say which extra is missing, not a traceback later
        require_extra(["onnx", "onnxscript"] + ([] if args.no_check else ["onnxruntime"]), "fapn export --format onnx")
    setup_runtime(args)
    model, checkpoint = load_model(
        args.weights,
        name=args.model,
        deform_backend=args.deform_backend,
        backbone=args.backbone,
        neck=args.neck,
        num_classes=args.num_classes,
    )
    example_shape = (2, 3, height, width)
    common: dict[str, Any] = {"example_shape": example_shape, "check": not args.no_check, "tolerance": args.tolerance}
    if args.static:
        common["check_shapes"] = [example_shape]
    if args.format == "onnx":
        metadata: dict[str, Any] = {}
        if checkpoint is not None:
            metadata["model_config"] = checkpoint.get("model_config", {})
            metadata.update({k: v for k, v in (checkpoint.get("dataset") or {}).items()})
        if args.quantize:
            require_extra(["onnxruntime"], "fapn export --quantize int8")
            return _export_int8(args, model, metadata, common)
        report = export_onnx(model, args.out, opset=args.opset, dynamic=not args.static, metadata=metadata, **common)
    elif args.format == "torchscript":
        report = export_torchscript(model, args.out, **common)
    else:
        report = export_program(model, args.out, dynamic=not args.static, **common)
    print(f"wrote {args.out} ({args.format})")
    if report is None:
        print("not checked (--no-check)")
        return 0
    print(report.summary())
    return 0 if report.passed else 1


def _export_int8(args: argparse.Namespace, model: Any, metadata: dict[str, Any], common: dict[str, Any]) -> int:
    """Float export (checked as usual) into a temporary folder, then INT8 at --out, checked against the float."""
    import tempfile
    from pathlib import Path

    from fapn.export import calibration_batches, compare_int8, export_onnx, quantize_onnx_int8
    from fapn.export.quantize import onnx_normalisation
    from fapn.inference.io import collect_images

    images = collect_images([args.calibration])[: max(1, args.calibration_limit)]
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float32.onnx"
        report = export_onnx(model, float_path, opset=args.opset, dynamic=not args.static, metadata=metadata, **common)
        if report is not None:
            print(report.summary())
            if not report.passed:
                return 1
        mean, std = onnx_normalisation(float_path)
        size = args.calibration_size

        def batches():  # a fresh pass for each use
            return calibration_batches(images, mean, std, size=size)

        quantize_onnx_int8(float_path, args.out, batches())
        check = compare_int8(float_path, args.out, batches(), threads=args.threads)
    print(f"wrote {args.out} (onnx, int8, calibrated on {len(images)} images from {args.calibration})")
    print(check.summary())
    if check.pixel_agreement < args.min_agreement:
        print(f"fapn: int8 check failed: agreement below --min-agreement {args.min_agreement}")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    return run_without_grad(_run, args)
