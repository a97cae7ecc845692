"""Deformable-conv backends against torchvision's op and a dense conv of the same shape, at FaPN's shapes.

Prints, per shape, the forward and forward+backward time of a dense ``conv2d``, of every backend of
``fapn.ops.deform_conv2d`` and (forward only) of onnxruntime's ``DeformConv``, with ratios, then the
norm-wise error of every backend in float32 against torchvision's op in float64.

All timings of one shape are interleaved round by round in one process, so that a neighbour's load on a
shared CPU hits every candidate alike; the table shows the median and the minimum over the rounds.

    python benchmarks/deform_conv.py                      # FaPN real-time shapes, 2 threads
    python benchmarks/deform_conv.py --shapes all --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fapn.inference.benchmark import time_interleaved
from fapn.ops import BACKENDS, deform_conv2d


@dataclass(frozen=True)
class Shape:
    name: str
    channels: int
    height: int
    width: int
    offset_groups: int = 8
    batch: int = 1


SHAPES = {
    "rt-s8": Shape("real-time FaPN, stride 8 of 768x1536", 128, 96, 192),
    "rt-s16": Shape("real-time FaPN, stride 16 of 768x1536", 128, 48, 96),
    "det-s8": Shape("detection neck, stride 8 of 800x1216", 256, 100, 152),
    "det-s16": Shape("detection neck, stride 16 of 800x1216", 256, 50, 76),
}
SHAPE_SETS = {"realtime": ["rt-s8", "rt-s16"], "all": list(SHAPES)}


def make_inputs(shape: Shape, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """FaPN-like inputs: offsets of a few pixels (std 2), sigmoid-range mask, DCN-initialised weight."""
    g = torch.Generator().manual_seed(seed)
    N, C, H, W, G = shape.batch, shape.channels, shape.height, shape.width, shape.offset_groups
    return {
        "input": torch.randn(N, C, H, W, generator=g, dtype=dtype),
        "offset": torch.randn(N, 2 * G * 9, H, W, generator=g, dtype=dtype) * 2,
        "mask": torch.rand(N, G * 9, H, W, generator=g, dtype=dtype),
        "weight": (torch.rand(C, C, 3, 3, generator=g, dtype=dtype) * 2 - 1) / (9 * C) ** 0.5,
        "bias": torch.randn(C, generator=g, dtype=dtype) * 0.1,
    }


def _deform_fn(backend: str, x: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lambda: deform_conv2d(
        x["input"], x["offset"], x["weight"], x["bias"], padding=1, mask=x["mask"], backend=backend
    )


def _dense_fn(x: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lambda: F.conv2d(x["input"], x["weight"], x["bias"], padding=1)


def _forward(fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def _forward_backward(fn: Callable[[], torch.Tensor], x: dict[str, torch.Tensor]) -> Callable[[], object]:
    grad = torch.randn_like(fn().detach())

    def run() -> object:
        for t in x.values():
            t.grad = None
        fn().backward(grad)
        return None

    return run


def _onnxruntime_fn(x: dict[str, torch.Tensor], threads: int) -> Callable[[], object] | None:
    """onnxruntime's DeformConv (opset 19) on the same inputs; ``None`` when onnx/onnxruntime are missing."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    G = x["mask"].shape[1] // 9
    node = helper.make_node(
        "DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"],
        kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1, offset_group=G,
    )  # fmt: skip
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(x[key].shape))
              for name, key in (("X", "input"), ("W", "weight"), ("offset", "offset"), ("B", "bias"), ("mask", "mask"))]  # fmt: skip
    output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph([node], "deform", inputs, [output]), opset_imports=[helper.make_opsetid("", 19)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # an onnxruntime without DeformConv
        return None
    feeds = {"X": x["input"].numpy(), "W": x["weight"].numpy(), "offset": x["offset"].numpy(),
             "B": x["bias"].numpy(), "mask": x["mask"].numpy()}  # fmt: skip
    reference = _deform_fn("torchvision", x)().detach()
    out = torch.from_numpy(session.run(None, feeds)[0])
    error = ((out - reference).norm() / reference.norm()).item()
    if error > 1e-4:
        print(f"  (onnxruntime DeformConv disagrees with torchvision: relative error {error:.1e})")
    _ = onnx  # imported for helper's sake
    return lambda: session.run(None, feeds)


def benchmark_shape(shape: Shape, backends: list[str], rounds: int, threads: int, backward: bool) -> None:
    x = make_inputs(shape)
    forward = {"dense conv2d": _forward(_dense_fn(x))}
    forward.update({b: _forward(_deform_fn(b, x)) for b in backends})
    ort_fn = _onnxruntime_fn(x, threads)
    if ort_fn is not None:
        forward["onnxruntime DeformConv"] = ort_fn
    results = {"forward": time_interleaved(forward, warmup=1, repeats=rounds)}
    if backward:
        for t in x.values():
            t.requires_grad_()
        both = {"dense conv2d": _forward_backward(_dense_fn(x), x)}
        both.update({b: _forward_backward(_deform_fn(b, x), x) for b in backends})
        results["forward+backward"] = time_interleaved(both, warmup=1, repeats=rounds)

    N, C, H, W = x["input"].shape
    print(f"\n{shape.name}: N={N}, C_in=C_out={C}, {H}x{W}, 3x3, {shape.offset_groups} offset groups, "
          f"{threads} threads, {rounds} rounds")  # fmt: skip
    print(f"{'pass':<17} {'candidate':<24} {'median ms':>10} {'min ms':>9} {'x dense':>8} {'torchvision / it':>17}")
    for pass_name, (times, errors) in results.items():
        median = {k: statistics.median(v) for k, v in times.items() if v}
        for name, ms in median.items():
            vs_tv = median["torchvision"] / ms if "torchvision" in median else float("nan")
            print(f"{pass_name:<17} {name:<24} {ms:>10.1f} {min(times[name]):>9.1f} "
                  f"{ms / median['dense conv2d']:>8.2f} {vs_tv:>17.2f}")  # fmt: skip
        for name, error in errors.items():
            print(f"{pass_name:<17} {name:<24} failed: {error}")


def exactness(backends: list[str]) -> None:
    """Norm-wise error, float32 against torchvision's op in float64, of the output and every gradient."""
    shape = Shape("exactness", 32, 24, 40, offset_groups=8, batch=2)
    x64 = make_inputs(shape, torch.float64, seed=1)
    x64["offset"] = x64["offset"] * 4  # std 8 pixels: many samples far away and outside
    names = ["output", "d input", "d offset", "d weight", "d bias", "d mask"]

    def run(backend: str, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        x = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        out = _deform_fn(backend, x)()
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + out.square().sum() / 2
        grads = torch.autograd.grad(loss, [x["input"], x["offset"], x["weight"], x["bias"], x["mask"]])
        return [out.detach(), *grads]

    reference = run("torchvision", x64)
    x32 = {k: v.float() for k, v in x64.items()}
    print("\nnorm-wise error ||a - ref|| / ||ref|| in float32, ref = torchvision in float64 "
          "(N=2, C=32, 24x40, 8 groups, offsets std 8 px)")  # fmt: skip
    print(f"{'backend':<14}" + "".join(f"{n:>11}" for n in names))
    for backend in backends:
        errors = [((a.double() - r).norm() / r.norm()).item() for a, r in zip(run(backend, x32), reference)]
        print(f"{backend:<14}" + "".join(f"{e:>11.1e}" for e in errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="realtime", help="'realtime', 'all' or names from: " + ", ".join(SHAPES))
    parser.add_argument("--backends", default=",".join(sorted(BACKENDS)), help="comma-separated backends")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per candidate (interleaved)")
    parser.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) threads")
    parser.add_argument("--no-backward", action="store_true", help="time the forward only")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; valid: {sorted(BACKENDS)}")
    names = SHAPE_SETS.get(args.shapes, args.shapes.split(","))
    for name in names:
        if name not in SHAPES:
            parser.error(f"unknown shape {name!r}; valid: {sorted(SHAPES)} or {sorted(SHAPE_SETS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in names:
        benchmark_shape(SHAPES[name], backends, args.rounds, args.threads, not args.no_backward)
    exactness(backends)


if __name__ == "__main__":
    main()
