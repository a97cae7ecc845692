"""FaPN's cost on every fast path of a CPU: the figures of record of docs/benchmarks.md, one JSON per host type.

Three sections, each timed side by side (candidates take turns, round by round, in one process; medians):

* ``op``: fapn's deformable conv (the ``cpu`` backend) against a dense ``conv2d`` of the same shape, threads, dtype
  and layout, forward, at FaPN's shapes (128 channels at 96x192 and 48x96, 256 channels at 100x152 and 50x76;
  8 offset groups); forward+backward against torchvision's CPU op (float32, which is all it has).
* ``model``: real-time FPN-R18 and FaPN-R18 (19 classes, batch 1) at 768x1536 and 1024x2048 in PyTorch
  (float32 / bfloat16 x contiguous / channels last) and onnxruntime (float32, and INT8 calibrated on random
  inputs, which sets ranges but not the speed): FaPN / FPN latency next to their MAC ratios.
* ``train``: one CamVid training step (batch 8 of 176x240, 11 classes, SGD), float32 and bfloat16 autocast.

Run it on a quiet machine (the load average is recorded before and after, and a warning printed when it says
other work ran). Every figure names the CPU and the instruction-set flags that decide the fast paths.

An AVX2-only host can be emulated on an AVX-512 one by capping every library's instruction set:
``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's kernels), ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's convolutions and
matmuls) and ``FAPN_KERNEL_MARCH=haswell`` (fapn's sampling kernels); the caps in force are recorded in the JSON
and printed with the tables. onnxruntime has no such cap, so leave it out there (``--no-onnx``). The clock and
caches stay the AVX-512 machine's: an emulation of the instruction set, not of another CPU.

    python benchmarks/cpu_paths.py                                   # all sections, 1 and 2 threads
    python benchmarks/cpu_paths.py --sections op --threads 2 --rounds 7
    python benchmarks/cpu_paths.py --out benchmarks/results/cpu/avx512.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fapn.inference.benchmark import (
    cpu_description,
    machine_load,
    prepare_onnxruntime,
    prepare_torch,
    time_interleaved,
)
from fapn.models import realtime_fapn
from fapn.ops import deform_conv2d
from fapn.profiling import profile_model

OP_SHAPES = {  # name: (channels, height, width)
    "128ch 96x192 (stride 8 of 768x1536)": (128, 96, 192),
    "128ch 48x96 (stride 16)": (128, 48, 96),
    "256ch 100x152 (detection, stride 8 of 800x1216)": (256, 100, 152),
    "256ch 50x76 (detection, stride 16)": (256, 50, 76),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FAPN_KERNEL_MARCH")
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds per call, candidates taking turns (one untimed call each first)."""
    times, _errors = time_interleaved(candidates, warmup=1, repeats=rounds)
    return {name: statistics.median(t) for name, t in times.items()}


def op_inputs(channels: int, height: int, width: int, dtype: torch.dtype, layout: torch.memory_format) -> dict:
    """FaPN-like inputs: offsets of a few pixels, a sigmoid-range mask, a DCN-scaled weight."""
    g = torch.Generator().manual_seed(0)
    x = {
        "input": torch.randn(1, channels, height, width, generator=g),
        "offset": torch.randn(1, 2 * 8 * 9, height, width, generator=g) * 2,
        "mask": torch.rand(1, 8 * 9, height, width, generator=g),
        "weight": (torch.rand(channels, channels, 3, 3, generator=g) * 2 - 1) / (9 * channels) ** 0.5,
        "bias": torch.randn(channels, generator=g) * 0.1,
    }
    x = {k: v.to(dtype) for k, v in x.items()}
    x["input"] = x["input"].contiguous(memory_format=layout)
    return x


def op_section(threads: int, rounds: int, shrink: int = 1, dtypes: tuple[str, ...] = tuple(DTYPES)) -> list[dict]:
    rows = []
    for shape_name, (channels, height, width) in OP_SHAPES.items():
        channels, height, width = channels // shrink, height // shrink, width // shrink
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for layout_name, layout in LAYOUTS.items():
                x = op_inputs(channels, height, width, dtype, layout)

                def dense(x: dict = x) -> object:
                    with torch.no_grad():
                        return F.conv2d(x["input"], x["weight"], x["bias"], padding=1)

                def deform(x: dict = x) -> object:
                    with torch.no_grad():
                        return deform_conv2d(x["input"], x["offset"], x["weight"], x["bias"], padding=1,
                                             mask=x["mask"], backend="cpu")  # fmt: skip

                medians = interleaved({"dense": dense, "deform": deform}, rounds)
                row = {"shape": shape_name, "threads": threads, "dtype": dtype_name, "layout": layout_name,
                       "pass": "forward", "dense_ms": medians["dense"], "deform_ms": medians["deform"],
                       "deform_over_dense": medians["deform"] / medians["dense"]}  # fmt: skip
                rows.append(row)
                print(f"  op {shape_name}, {threads} thr, {dtype_name} {layout_name}: dense {medians['dense']:.1f} "
                      f"ms, deform {medians['deform']:.1f} ms = {row['deform_over_dense']:.2f}x", flush=True)  # fmt: skip
        for layout_name, layout in LAYOUTS.items():  # forward+backward, float32: torchvision has nothing else
            x = op_inputs(channels, height, width, torch.float32, layout)
            for t in x.values():
                t.requires_grad_()
            grad = torch.randn(1, channels, height, width)

            def step(backend: str, x: dict = x, grad: torch.Tensor = grad) -> Callable[[], object]:
                def run() -> object:
                    for t in x.values():
                        t.grad = None
                    out = deform_conv2d(x["input"], x["offset"], x["weight"], x["bias"], padding=1, mask=x["mask"],
                                        backend=backend)  # fmt: skip
                    out.backward(grad)
                    return None

                return run

            medians = interleaved({"cpu": step("cpu"), "torchvision": step("torchvision")}, max(1, rounds // 2))
            row = {"shape": shape_name, "threads": threads, "dtype": "float32", "layout": layout_name,
                   "pass": "forward+backward", "deform_ms": medians["cpu"], "torchvision_ms": medians["torchvision"],
                   "speedup_over_torchvision": medians["torchvision"] / medians["cpu"]}  # fmt: skip
            rows.append(row)
            print(f"  op {shape_name}, {threads} thr, fwd+bwd float32 {layout_name}: {medians['cpu']:.1f} ms, "
                  f"torchvision {medians['torchvision']:.1f} ms = {row['speedup_over_torchvision']:.1f}x faster",
                  flush=True)  # fmt: skip
    return rows


def _model(variant: str, num_classes: int = 19) -> torch.nn.Module:
    torch.manual_seed(0)
    model = realtime_fapn(backbone="resnet18", num_classes=num_classes, neck=variant)
    for module in model.modules():  # fractional offsets, as in a trained FAM (zero-initialised they are integral)
        if hasattr(module, "offset_mask"):
            torch.nn.init.normal_(module.offset_mask.weight, std=0.01)
    return model.eval()


def model_section(
    threads: int, rounds: int, sizes: list[tuple[int, int]], onnx: bool, dtypes: tuple[str, ...] = tuple(DTYPES)
) -> list[dict[str, Any]]:
    from fapn.export import export_onnx, quantize_onnx_int8

    models = {v: _model(v) for v in ("fpn", "fapn")}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for height, width in sizes:
            shape = (1, 3, height, width)
            macs = {v: profile_model(m, shape) for v, m in models.items()}
            settings: list[tuple[str, str, str]] = [
                ("torch", d, layout) for d in dtypes for layout in LAYOUTS
            ]  # fmt: skip
            if onnx:
                settings += [("onnxruntime", "float32", "contiguous"), ("onnxruntime-int8", "int8", "contiguous")]
            for runtime, dtype, layout in settings:
                runners = {}
                for variant, model in models.items():
                    if runtime == "torch":
                        runners[variant] = prepare_torch(
                            model, shape, dtype=dtype, channels_last=layout != "contiguous"
                        )
                        continue
                    path = Path(folder) / f"{variant}.onnx"
                    if not path.exists():
                        export_onnx(model, path, check=False)
                    if runtime == "onnxruntime-int8":
                        int8 = Path(folder) / f"{variant}_{height}x{width}.int8.onnx"
                        gen = torch.Generator().manual_seed(0)
                        batches = [torch.randn(shape, generator=gen).numpy() for _ in range(2)]
                        quantize_onnx_int8(path, int8, batches)
                        path = int8
                    runners[variant] = prepare_onnxruntime(path, shape, threads=threads)[0]
                medians = interleaved(runners, rounds)
                row = {"size": f"{height}x{width}", "threads": threads, "runtime": runtime, "dtype": dtype,
                       "layout": layout, "fpn_ms": medians["fpn"], "fapn_ms": medians["fapn"],
                       "fapn_over_fpn": medians["fapn"] / medians["fpn"],
                       "macs_ratio_paper": macs["fapn"].gmacs_paper / macs["fpn"].gmacs_paper,
                       "macs_ratio_full": macs["fapn"].gmacs_full / macs["fpn"].gmacs_full}  # fmt: skip
                rows.append(row)
                print(f"  model {height}x{width}, {threads} thr, {runtime} {dtype} {layout}: FPN {medians['fpn']:.0f} "
                      f"ms, FaPN {medians['fapn']:.0f} ms = {row['fapn_over_fpn']:.2f}x", flush=True)  # fmt: skip
    return rows


def train_section(
    threads: int, rounds: int, batch: int = 8, size: tuple[int, int] = (176, 240), bf16: bool = True
) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=g)
    labels = torch.randint(0, 12, (batch, *size), generator=g)
    rows = []
    for amp in (False, True) if bf16 else (False,):
        steps = {}
        for variant in ("fpn", "fapn"):
            model = _model(variant, 11).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

            def step(
                model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer, amp: bool = amp
            ) -> object:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    loss = F.cross_entropy(model(images).float(), labels, ignore_index=11)
                loss.backward()
                optimizer.step()
                return loss

            steps[variant] = step
        medians = interleaved(steps, rounds)
        row = {"threads": threads, "precision": "bfloat16 autocast" if amp else "float32", "fpn_ms": medians["fpn"],
               "fapn_ms": medians["fapn"], "fapn_over_fpn": medians["fapn"] / medians["fpn"]}  # fmt: skip
        rows.append(row)
        print(f"  train step, {threads} thr, {row['precision']}: FPN {medians['fpn']:.0f} ms, FaPN "
              f"{medians['fapn']:.0f} ms = {row['fapn_over_fpn']:.2f}x", flush=True)  # fmt: skip
    return rows


def table(columns: list[str], rows: list[list[Any]], left: int = 4) -> list[str]:
    """A markdown table after a blank line (nothing without rows): the first ``left`` columns left-aligned, the rest
    (the figures) right-aligned; the last column of the model table stays left-aligned as before."""
    if not rows:
        return []
    align = ["---"] * left + ["---:"] * (len(columns) - left)
    if columns[-1].startswith("MACs"):
        align[-1] = "---"
    return ["", "| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(str(v) for v in row) + " |" for row in rows
    ]


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md from a result file's content."""
    cpu = result["cpu"]
    lines = [f"{cpu['model']}, {cpu['cores']} cores, flags {', '.join(cpu['flags'])}, torch {cpu['torch']} "
             f"(dispatch {cpu['torch_cpu_capability']}); load average {result['load_before']:.2f} before, "
             f"{result['load_after']:.2f} after"]  # fmt: skip
    if result.get("isa_caps"):
        lines[0] += "; instruction set capped: " + ", ".join(f"{k}={v}" for k, v in result["isa_caps"].items())
    op = [r for r in result.get("op", []) if r["pass"] == "forward"]
    lines += table(
        ["shape", "threads", "dtype", "layout", "dense ms", "deform ms", "deform / dense"],
        [[r["shape"], r["threads"], r["dtype"], r["layout"], f"{r['dense_ms']:.1f}", f"{r['deform_ms']:.1f}",
          f"{r['deform_over_dense']:.2f}"] for r in op],
    )  # fmt: skip
    both = [r for r in result.get("op", []) if r["pass"] == "forward+backward"]
    lines += table(
        ["shape", "threads", "layout", "fwd+bwd ms", "torchvision ms", "faster than torchvision"],
        [[r["shape"], r["threads"], r["layout"], f"{r['deform_ms']:.1f}", f"{r['torchvision_ms']:.1f}",
          f"{r['speedup_over_torchvision']:.1f}x"] for r in both],
        left=3,
    )  # fmt: skip
    lines += table(
        ["input", "threads", "runtime", "dtype", "layout", "FPN ms", "FaPN ms", "FaPN / FPN", "MACs (paper / full)"],
        [[r["size"], r["threads"], r["runtime"], r["dtype"], r["layout"], f"{r['fpn_ms']:.0f}", f"{r['fapn_ms']:.0f}",
          f"{r['fapn_over_fpn']:.2f}", f"{r['macs_ratio_paper']:.2f} / {r['macs_ratio_full']:.2f}"]
         for r in result.get("model", [])],
        left=5,
    )  # fmt: skip
    lines += table(
        ["threads", "precision", "FPN step ms", "FaPN step ms", "FaPN / FPN"],
        [[r["threads"], r["precision"], f"{r['fpn_ms']:.0f}", f"{r['fapn_ms']:.0f}", f"{r['fapn_over_fpn']:.2f}"]
         for r in result.get("train", [])],
        left=2,
    )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=("op", "model", "train"), default=["op", "model", "train"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch / onnxruntime threads")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per candidate")
    parser.add_argument("--sizes", nargs="+", default=["768x1536", "1024x2048"], help="model input sizes HxW")
    parser.add_argument("--no-onnx", action="store_true", help="leave onnxruntime out of the model section")
    parser.add_argument(
        "--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES),
        help="PyTorch dtypes (bfloat16 also means the bfloat16-autocast training step)",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--markdown", default=None, help="JSON file of an earlier run: print its tables and exit")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one round: checks the script runs")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    shrink, train_batch, train_size = 1, 8, (176, 240)
    if args.smoke:
        sizes, shrink, train_batch, train_size, args.rounds = [(64, 96)], 8, 2, (64, 64), 1
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    result: dict[str, Any] = {"cpu": cpu_description(), "command": " ".join(["python", *sys.argv]),
                              "isa_caps": caps, "rounds": args.rounds, "load_before": machine_load()}  # fmt: skip
    print(f"# {result['cpu']}", flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        if "op" in args.sections:
            result.setdefault("op", []).extend(op_section(threads, args.rounds, shrink, tuple(args.dtypes)))
        if "model" in args.sections:
            result.setdefault("model", []).extend(
                model_section(threads, args.rounds, sizes, not args.no_onnx, tuple(args.dtypes))  # type: ignore[arg-type]
            )
        if "train" in args.sections:
            result.setdefault("train", []).extend(
                train_section(threads, args.rounds, train_batch, train_size, "bfloat16" in args.dtypes)
            )
    result["load_after"] = machine_load()
    busy = max(v for v in (result["load_before"], result["load_after"], 0.0) if v is not None)
    if busy > max(args.threads) + 0.5:  # the run's own threads count in the load average
        print(f"warning: load average {busy:.1f}: other work shared the CPU; these are not figures of record",
              file=sys.stderr)  # fmt: skip
    print(markdown(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
