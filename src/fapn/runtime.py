"""Where and how a model runs: the device, mixed precision and CPU threads, one definition for the whole library.

The engine, inference, export and the command line all call these three functions, so ``--device``,
``--threads`` and ``train.amp`` mean the same everywhere; the engine's losses and the metrics sum over
``torchrun``'s processes with :func:`all_reduce_sum`. This module imports nothing from fapn [ours].

Example:
    >>> import torch
    >>> from fapn.runtime import autocast, resolve_device, set_threads
    >>> device = resolve_device("cpu")
    >>> set_threads(None)  # torch's default: one thread per core
    >>> with autocast(device, enabled=False):
    ...     y = torch.ones(2) * 2
    >>> device, y.dtype
    (device(type='cpu'), torch.float32)
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = [
    "resolve_device",
    "autocast",
    "set_threads",
    "loader_workers",
    "cuda_build_without_gpu",
    "prepare_inference",
    "model_dtype",
    "all_reduce_sum",
    "DEVICE_CHOICES",
    "PRECISIONS",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""The device names a user types (``cuda:N`` is accepted too)."""

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Inference precisions a user picks (``--precision``): the dtype the weights and activations are cast to."""


def resolve_device(name: str | torch.device = "auto", option: str = "--device") -> torch.device:
    """The :class:`torch.device` a user's device name means.

    Args:
        name: ``auto`` (the first CUDA GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        option: how the user gave it, for the error message (``--device`` or ``train.device``).

    Raises:
        ValueError: an unknown name, or a CUDA device that torch does not see.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    shown = f"{option} {name}" if option.startswith("-") else f"{option}={name}"
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise ValueError(f"{shown}: expected cuda or cuda:N with N a GPU number")
        if not torch.cuda.is_available():
            raise ValueError(
                f"{shown}: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); use cpu or auto"
            )
        if index_text and int(index_text) >= torch.cuda.device_count():
            raise ValueError(f"{shown}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device(text)
    raise ValueError(f"{shown}: unknown device; expected one of auto, cpu, cuda, cuda:N")


def autocast(device: torch.device | str, enabled: bool) -> AbstractContextManager[object]:
    """Mixed precision for ``device``: bfloat16 on the CPU, float16 on CUDA; a no-op when not ``enabled``.

    bfloat16 on the CPU because float16 matmuls there are slow and have no loss scaler [ours]; the deformable
    convolution's CPU kernels run in bfloat16 too (its pure-PyTorch and torchvision paths sample in float32).
    """
    if not enabled:
        return nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16 if device_type == "cpu" else torch.float16)


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads (intra-op) for this process.

    ``None`` leaves torch's default, one thread per core. On a machine busy with other work fewer threads are
    often much faster (one thread can be several times faster than two on a loaded 2-core machine); the library
    does not guess how busy the machine is, so pass ``--threads 1`` (or ``train.threads: 1``) there.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or null (torch's default), got {threads!r}")
    torch.set_num_threads(threads)


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has it), as torch's loader counts."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """Data-loader processes for a recipe's ``data.num_workers``: at most one per usable core.

    A recipe written for a server (``num_workers: 8``) then runs on a 2-core machine without torch's warning and
    without processes that only contend; the batches are the same for any count (each sample is drawn from its
    own seed).

    Raises:
        ValueError: a negative count.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"data.num_workers must be 0 or more, got {requested!r}")
    return min(requested, _usable_cores())


CPU_INSTALL = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
"""The README's install line for PyTorch's CPU build."""


def _cuda_libraries_bytes() -> int:
    """Bytes of the ``nvidia-*`` packages that the CUDA build of torch installs beside it (0 when none), from
    their installation records (no walk over the files)."""
    from importlib import metadata

    total = 0
    for dist in metadata.distributions():
        if (dist.metadata["Name"] or "").lower().startswith("nvidia-"):
            total += sum(f.size or 0 for f in dist.files or [])
    return total


def cuda_build_without_gpu() -> str | None:
    """A note when this torch is the CUDA build but no CUDA GPU is visible (``None`` otherwise): on a CPU-only
    machine the CPU build computes the same and leaves out the CUDA libraries, several GB.

    Example:
        >>> note = cuda_build_without_gpu()
        >>> note is None or "whl/cpu" in note
        True
    """
    if torch.version.cuda is None or torch.cuda.is_available():
        return None
    size = _cuda_libraries_bytes()
    saving = f"{size / 1e9:.1f} GB of CUDA libraries" if size else "the CUDA libraries, several GB"
    return (
        f"this torch is the CUDA build (CUDA {torch.version.cuda}) on a machine without a CUDA GPU: the CPU build computes "
        f"the same without {saving} (README, Quick start: {CPU_INSTALL})"
    )


def prepare_inference(
    model: torch.nn.Module, device: torch.device | str, precision: str = "fp32", channels_last: bool | None = None
) -> torch.nn.Module:
    """Make ``model`` ready for inference, in place: eval mode, on ``device``, in ``precision``, fastest layout.

    The layout is the fastest that computes the same function: channels last (NHWC) on the CPU, where oneDNN's
    convolutions and fapn's deformable-conv kernels run 1.2x to 1.4x faster than on NCHW (docs/benchmarks.md),
    and on CUDA in float16/bfloat16 (tensor cores); NCHW for float32 on CUDA. Only the weights are converted: a
    convolution with channels-last weights computes in channels last whatever the input's layout, so callers
    keep passing NCHW images (cast to :func:`model_dtype`). The results equal NCHW's up to float rounding
    (tests/test_inference.py checks the labels are the same).

    Args:
        model: any image model.
        device: where it runs.
        precision: a key of :data:`PRECISIONS`; ``fp16`` needs CUDA (CPUs have no fast float16 convolutions).
        channels_last: force the layout (``None``: the rule above).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: an unknown precision, or ``fp16`` on a CPU.

    Example:
        >>> net = prepare_inference(torch.nn.Conv2d(3, 8, 3), "cpu", "bf16")
        >>> net.weight.dtype, net.weight.is_contiguous(memory_format=torch.channels_last)
        (torch.bfloat16, True)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16")
    dtype = PRECISIONS[precision]
    if channels_last is None:
        channels_last = device.type == "cpu" or dtype != torch.float32
    model.eval().to(device=device, dtype=dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (float32 for a model without one): what its
    input must be cast to."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the processes of ``torch.distributed`` (``torchrun``), as a new tensor on ``value``'s
    device; outside DDP ``value`` itself. NCCL reduces CUDA tensors only, so a CPU tensor (a metric's counts) makes
    the trip through the GPU there.

    Example:
        >>> all_reduce_sum(torch.ones(2))  # one process
        tensor([1., 1.])
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    device = torch.device("cuda") if dist.get_backend() == "nccl" and not value.is_cuda else value.device
    summed = value.to(device, copy=True)
    dist.all_reduce(summed)
    return summed.to(value.device)
