"""Latency and throughput of segmentation models: PyTorch (eager or compiled, any dtype and memory format)
and onnxruntime, with MAC counts to compare measured ratios against what FLOPs predict."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LatencyResult",
    "time_calls",
    "prepare_torch",
    "prepare_onnxruntime",
    "time_interleaved",
    "add_ratios",
    "results_table",
    "machine_load",
    "cpu_description",
    "reliability_warnings",
    "DTYPES",
    "MAX_RELATIVE_SPREAD",
]

MAX_RELATIVE_SPREAD = 0.15
"""Interquartile range / median above which a row's figures are called unreliable: on a quiet machine repeated
forward passes of these models spread by a few percent."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LatencyResult:
    """One measured configuration. Times in milliseconds per forward pass of the whole batch."""

    model: str
    height: int
    width: int
    batch: int
    runtime: str
    dtype: str = "float32"
    memory_format: str = "contiguous"
    device: str = "cpu"
    deform_backend: str = ""
    times_ms: list[float] = field(default_factory=list)
    gmacs: float | None = None
    latency_ratio: float | None = None
    macs_ratio: float | None = None
    note: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def iqr_ms(self) -> tuple[float, float]:
        """25th and 75th percentiles."""
        if len(self.times_ms) < 2:
            return (self.median_ms, self.median_ms)
        q = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return (q[0], q[2])

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms if self.times_ms else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median_ms=self.median_ms, iqr_ms=list(self.iqr_ms), images_per_s=self.images_per_s)
        return data


def time_calls(
    fn: Callable[[], Any], warmup: int, repeats: int, synchronize: Callable[[], None] | None = None
) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def prepare_torch(
    model: nn.Module,
    shape: tuple[int, int, int, int],
    *,
    device: str = "cpu",
    dtype: str = "float32",
    channels_last: bool = False,
    compile: bool = False,
) -> Callable[[], Any]:
    """A no-argument callable running a copy of ``model`` on a random input (``compile``: ``torch.compile``,
    called twice here so that compiling is not timed)."""
    torch_device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model).eval().to(torch_device, DTYPES[dtype]).to(memory_format=memory_format)
    x = torch.randn(shape, device=torch_device, dtype=DTYPES[dtype]).contiguous(memory_format=memory_format)
    runner: Callable[[Tensor], Tensor] = torch.compile(net) if compile else net

    def call() -> Tensor:
        with torch.inference_mode():
            return runner(x)

    if compile:  # compilation (and a possible recompile on the second call) is not part of the latency
        for _ in range(2):
            call()
    return call


def prepare_onnxruntime(
    onnx_path: str | Path, shape: tuple[int, int, int, int], *, device: str = "cpu", threads: int | None = None
) -> tuple[Callable[[], Any], str]:
    """A no-argument callable running an ONNX file in onnxruntime on a random float32 input, and the
    execution provider used."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)
    name = session.get_inputs()[0].name
    x = torch.randn(shape).numpy()
    return (lambda: session.run(None, {name: x})), session.get_providers()[0]


def time_interleaved(
    runners: Mapping[str, Callable[[], Any]],
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Milliseconds per call of each runner, taking turns: every runner runs once in repeat ``r`` before any
    runs in repeat ``r + 1``, so load from other processes on a shared machine hits all of them alike.

    Returns:
        ``(times, errors)``: the times per runner, and the first line of the error of each runner that raised
        (``RuntimeError``/``NotImplementedError``, e.g. a dtype without a kernel); it is not run again.
    """
    sync = synchronize or (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in runners}
    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], Any]) -> float | None:
        start = time.perf_counter()
        try:
            fn()
            sync()
        except (RuntimeError, NotImplementedError) as err:
            errors[name] = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            return None
        return (time.perf_counter() - start) * 1000.0

    for name, fn in runners.items():
        for _ in range(warmup):
            if name not in errors:
                attempt(name, fn)
    for _ in range(repeats):
        for name, fn in runners.items():
            if name not in errors and (elapsed := attempt(name, fn)) is not None:
                times[name].append(elapsed)
    return times, errors


def add_ratios(results: list[LatencyResult], baseline: str) -> None:
    """Set ``latency_ratio`` and ``macs_ratio`` of each result against the ``baseline`` model measured in the
    same setting (size, batch, runtime, dtype, memory format, device). ``baseline`` is a model's full label or
    its first word (the neck); the first match per setting is used."""

    def setting(r: LatencyResult) -> tuple[Any, ...]:
        return (r.height, r.width, r.batch, r.runtime, r.dtype, r.memory_format, r.device)

    def is_baseline(r: LatencyResult) -> bool:  # the full label, or its neck ("fpn (resnet18) [a.pt]")
        return r.model == baseline or r.model.split(" ")[0] == baseline

    base: dict[tuple[Any, ...], LatencyResult] = {}
    for r in results:
        if is_baseline(r) and r.times_ms:
            base.setdefault(setting(r), r)
    for r in results:
        ref = base.get(setting(r))
        if ref is None or not r.times_ms:
            continue
        r.latency_ratio = r.median_ms / ref.median_ms
        if r.gmacs is not None and ref.gmacs:
            r.macs_ratio = r.gmacs / ref.gmacs


def results_table(results: Sequence[LatencyResult], baseline: str | None = None) -> str:
    """A Markdown table of the results, in the order given."""
    ratio_name = f"x {baseline}" if baseline else "ratio"
    lines = [
        f"| model | deform backend | input | batch | runtime | dtype | memory | median ms | IQR ms | img/s | GMAC | latency {ratio_name} | MACs {ratio_name} |",
        "|---|---|---|---:|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        low, high = r.iqr_ms
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        median = f"{r.median_ms:.1f}" if r.times_ms else r.note or "-"
        lines.append(
            f"| {r.model} | {r.deform_backend or '-'} | {r.height}x{r.width} | {r.batch} | {r.runtime} | {r.dtype} | {r.memory_format} | "
            f"{median} | {low:.1f}-{high:.1f} | {r.images_per_s:.2f} | {fmt(r.gmacs, '.2f')} | "
            f"{fmt(r.latency_ratio, '.3f')} | {fmt(r.macs_ratio, '.3f')} |"
        )
    return "\n".join(lines)


def machine_load() -> float | None:
    """The 1-minute load average (``None`` where the OS has none)."""
    import os

    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def reliability_warnings(
    results: Sequence[LatencyResult], loads: Sequence[float | None], threads: int, cores: int | None = None
) -> list[str]:
    """What says the figures are not to be trusted: other work on the machine, or a wide spread of the times.

    Args:
        results: the measured rows.
        loads: load averages read around the run (``None`` entries are skipped). The run itself adds up to
            ``threads`` to the load, so a load above ``threads + 0.5`` means other work ran beside it, on its
            cores or on the others (which share the caches and the memory bandwidth).
        threads: threads the benchmark used.
        cores: CPU cores (default ``os.cpu_count()``).

    Returns:
        one sentence per problem; empty when the run looks clean.

    Example:
        >>> row = LatencyResult("fpn", 64, 64, 1, "torch", times_ms=[10.0, 10.0, 30.0, 30.0])
        >>> reliability_warnings([row], [0.1], threads=1, cores=2)[0][:28]
        'fpn torch float32 contiguous'
    """
    import os

    cores = cores or os.cpu_count() or 1
    warnings: list[str] = []
    measured = [load for load in loads if load is not None]
    if measured and max(measured) > threads + 0.5:
        warnings.append(
            f"load average {max(measured):.1f} on {cores} cores while timing with {threads} threads: other work "
            "shares the CPU, so times and ratios are unreliable; rerun on a quiet machine (or with fewer --threads)"
        )
    for r in results:
        if len(r.times_ms) >= 4 and r.median_ms > 0:
            low, high = r.iqr_ms
            spread = (high - low) / r.median_ms
            if spread > MAX_RELATIVE_SPREAD:
                warnings.append(
                    f"{r.model} {r.runtime} {r.dtype} {r.memory_format} {r.height}x{r.width}: the times spread by "
                    f"{100 * spread:.0f}% of the median (interquartile range {low:.1f}-{high:.1f} ms): unreliable"
                )
    return warnings


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
"""The CPU flags that decide which fast paths run here (oneDNN's bfloat16 and int8 kernels, fapn's -march=native
sampling kernels): every figure of record names them."""


def cpu_description() -> dict[str, Any]:
    """The CPU as the speed figures must name it: model, logical cores, the flags of :data:`ISA_FLAGS` it has,
    PyTorch's dispatch level, the load average now.

    Example:
        >>> sorted(cpu_description())
        ['cores', 'flags', 'load_average', 'model', 'torch', 'torch_cpu_capability']
    """
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model == (platform.processor() or platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
    except OSError:
        pass
    present = set(flags.split())
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [f for f in ISA_FLAGS if f in present],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": machine_load(),
    }
