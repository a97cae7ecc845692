"""``fapn benchmark``: latency and images/s of models side by side, PyTorch and onnxruntime."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fapn.cli.common import THREADS_HELP, HelpFormatter, add_threads_argument, parse_size

__all__ = ["register", "run", "requested_sizes"]

RUNTIMES = ("torch", "compile", "onnxruntime", "onnxruntime-int8")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="latency / images per second of models, PyTorch and onnxruntime, with ratios to FPN",
        description=(
            "Time models at given input sizes and batch sizes: every combination of --necks/--weights, "
            "--sizes, --batch-sizes, --runtimes, --dtypes and --memory-formats, after --warmup untimed runs, "
            "median and interquartile range over --repeats. Prints a Markdown table with each model's "
            "latency ratio to the baseline (FPN) in the same setting, next to the ratio of their MACs "
            "(fvcore convention, deformable sampling not counted). Example: fapn benchmark --necks fpn fapn "
            "--sizes 768x1536 1024x2048 --runtimes torch onnxruntime --repeats 5"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--necks",
        "--variants",
        dest="necks",
        nargs="*",
        default=["fpn", "fapn"],
        help="untrained real-time models by their neck (fpn, fpn+fam, fpn+fam+fsm, fapn); --variants, its earlier "
        "name, still works",
    )
    parser.add_argument("--weights", nargs="*", default=[], help="checkpoints to time as well")
    parser.add_argument("--backbone", default="resnet18", help="backbone of the untrained models")
    parser.add_argument("--num-classes", type=int, default=19, help="classes of the untrained models")
    parser.add_argument("--baseline", default="fpn", help="model the ratios are taken against (a neck or label)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=["768x1536"], metavar="HxW", help="input sizes")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1], help="batch sizes")
    parser.add_argument(
        "--runtimes",
        nargs="+",
        choices=RUNTIMES,
        default=["torch"],
        help="compile = torch.compile; onnxruntime-int8 = the ONNX export quantized to INT8 (fapn export --quantize "
        "int8), calibrated on --calibration images or, without them, on random inputs (fine for latency only)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=("float32", "float16", "bfloat16"),
        default=["float32"],
        help="PyTorch compute dtypes to time (weights and input cast to it; onnxruntime runs float32 / int8)",
    )
    parser.add_argument(
        "--memory-formats",
        nargs="+",
        choices=("contiguous", "channels_last"),
        default=["contiguous"],
        help="PyTorch memory formats to time (channels_last: NHWC, usually faster on CPUs)",
    )
    parser.add_argument(
        "--calibration", default=None, metavar="DIR", help="images to calibrate onnxruntime-int8 on (default: random)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs")
    add_threads_argument(parser, help=THREADS_HELP + " (torch and onnxruntime)")
    parser.add_argument(
        "--deform-backends",
        nargs="+",
        default=["auto"],
        help="deformable-conv backends to time FaPN models with in PyTorch (auto = the default for the device)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.set_defaults(func=run)


def requested_sizes(args: argparse.Namespace) -> list[tuple[int, int]]:
    """``--sizes`` as ``(height, width)`` pairs. argparse applies ``type`` to typed values but not to a list
    default, so the default ``"768x1536"`` arrives as a string (kept a string so that ``--help`` shows it as typed)."""
    return [size if isinstance(size, tuple) else parse_size(size) for size in args.sizes]


def run(args: argparse.Namespace) -> int:
    import json
    import platform
    import tempfile
    from pathlib import Path

    import torch
    from tqdm import tqdm

    import fapn.ops
    from fapn.cli.common import require_extra, setup_runtime
    from fapn.export import export_onnx, quantize_onnx_int8
    from fapn.inference.benchmark import (
        LatencyResult,
        add_ratios,
        machine_load,
        prepare_onnxruntime,
        prepare_torch,
        reliability_warnings,
        results_table,
        time_interleaved,
    )
    from fapn.inference.loading import load_model, model_label
    from fapn.layers import ModulatedDeformConv2d
    from fapn.profiling import profile_model

    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    device = str(setup_runtime(args))
    backends = [fapn.ops.default_backend(device) if b == "auto" else b for b in args.deform_backends]
    unknown = [b for b in backends if b not in fapn.ops.BACKENDS]
    if unknown:
        raise ValueError(f"unknown --deform-backends {unknown}; valid: auto, {', '.join(sorted(fapn.ops.BACKENDS))}")
    if {"onnxruntime", "onnxruntime-int8"} & set(args.runtimes):
        require_extra(["onnx", "onnxscript", "onnxruntime"], "fapn benchmark --runtimes onnxruntime")
    sizes = requested_sizes(args)
    bases = [
        (neck, load_model(name="realtime_fapn", backbone=args.backbone, neck=neck, num_classes=args.num_classes)[0])
        for neck in args.necks
    ]
    for path in args.weights:
        model, checkpoint = load_model(path)
        bases.append((model_label(model, checkpoint, fallback=str(path)) + f" [{Path(path).name}]", model))
    if not bases:
        raise ValueError("nothing to time: give --necks and/or --weights")
    # (label, deform backend or "", model); models without deformable convs are timed once
    entries: list[tuple[str, str, torch.nn.Module]] = []
    for label, model in bases:
        if any(isinstance(m, ModulatedDeformConv2d) for m in model.modules()):
            entries += [(label, backend, model) for backend in backends]
        else:
            entries.append((label, "", model))
    threads = args.threads or torch.get_num_threads()
    print(
        f"# fapn benchmark: {platform.machine()}, {threads} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
        + f", torch {torch.__version__}; warmup {args.warmup}, {args.repeats} interleaved repeats",
        flush=True,
    )
    settings = [
        (size, batch, runtime, dtype, memory)
        for size in sizes
        for batch in args.batch_sizes
        for runtime in args.runtimes
        for dtype in (args.dtypes if not runtime.startswith("onnxruntime") else ["float32"])
        for memory in (args.memory_formats if not runtime.startswith("onnxruntime") else ["contiguous"])
    ]
    load_before = machine_load()
    results: list[LatencyResult] = []
    macs: dict[tuple[str, tuple[int, ...]], float] = {}
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with (
        tempfile.TemporaryDirectory() as folder,
        tqdm(settings, desc="benchmark", unit="setting", file=sys.stderr) as bar,
    ):
        onnx_files: dict[str, Path] = {}
        for (height, width), batch, runtime, dtype, memory in bar:
            shape = (batch, 3, height, width)
            bar.set_postfix_str(f"{height}x{width} b{batch} {runtime} {dtype} {memory}")
            runners = {}
            rows: dict[str, LatencyResult] = {}
            seen_onnx: set[str] = set()
            for label, backend, model in entries:
                if runtime.startswith("onnxruntime"):
                    if label in seen_onnx:  # ONNX DeformConv whatever the PyTorch backend
                        continue
                    seen_onnx.add(label)
                    if label not in onnx_files:
                        onnx_files[label] = Path(folder) / f"{len(onnx_files)}.onnx"
                        report = export_onnx(model, onnx_files[label], check_shapes=[(1, 3, 64, 96)])
                        if report is not None:
                            tqdm.write(f"{label}: {report.summary()}", file=sys.stderr)
                    onnx_file = onnx_files[label]
                    if runtime == "onnxruntime-int8":
                        int8_file = onnx_file.with_suffix(".int8.onnx")
                        if not int8_file.exists():
                            quantize_onnx_int8(onnx_file, int8_file, _calibration(args, onnx_file, shape))
                        onnx_file = int8_file
                    runner, provider = prepare_onnxruntime(onnx_file, shape, device=device, threads=threads)
                    key = label
                    row = LatencyResult(
                        label,
                        height,
                        width,
                        batch,
                        runtime,
                        "int8" if runtime == "onnxruntime-int8" else "float32",
                        "contiguous",
                        "cuda" if provider.startswith("CUDA") else "cpu",
                        "onnx DeformConv" if backend else "",
                    )
                else:
                    for layer in model.modules():
                        if isinstance(layer, ModulatedDeformConv2d):
                            layer.backend = backend or None
                    runner = prepare_torch(
                        model,
                        shape,
                        device=device,
                        dtype=dtype,
                        channels_last=memory == "channels_last",
                        compile=runtime == "compile",
                    )
                    key = f"{label}/{backend}"
                    row = LatencyResult(
                        label,
                        height,
                        width,
                        batch,
                        "torch.compile" if runtime == "compile" else "torch",
                        dtype,
                        memory,
                        device,
                        backend,
                    )
                runners[key] = runner
                rows[key] = row
                if (label, shape) not in macs:
                    macs[(label, shape)] = profile_model(model, shape).gmacs_paper
                row.gmacs = macs[(label, shape)]
            times, errors = time_interleaved(runners, args.warmup, args.repeats, sync)
            for key, row in rows.items():
                row.times_ms = times[key]
                row.note = f"failed: {errors[key]}" if key in errors else ""
                results.append(row)
                tqdm.write(
                    f"  {row.model} {row.deform_backend or ''} {height}x{width} b{batch} {row.runtime} {dtype} "
                    f"{memory}: {row.median_ms:.1f} ms median {row.note}",
                    file=sys.stderr,
                )
    add_ratios(results, args.baseline)
    load_after = machine_load()
    for warning in reliability_warnings(results, [load_before, load_after], threads):
        print(f"fapn benchmark: warning: {warning}", file=sys.stderr)
    print(results_table(results, args.baseline))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=2))
    return 0


def _calibration(args: argparse.Namespace, onnx_file: Any, shape: tuple[int, int, int, int]) -> Any:
    """Calibration inputs for onnxruntime-int8: the --calibration images, or four random inputs of ``shape``."""
    import numpy as np

    from fapn.export.quantize import calibration_batches, onnx_normalisation
    from fapn.inference.io import collect_images

    if args.calibration:
        mean, std = onnx_normalisation(onnx_file)
        return calibration_batches(collect_images([args.calibration])[:64], mean, std, size=shape[2:])
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]
