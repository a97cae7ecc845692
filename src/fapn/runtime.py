"""Where and how a model runs: the device, mixed precision and CPU threads, one definition for the whole library.

The engine, inference, export and the command line all call these three functions, so ``--device``,
``--threads`` and ``train.amp`` mean the same everywhere. This module imports nothing from fapn [ours].

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

__all__ = ["resolve_device", "autocast", "set_threads", "loader_workers", "cuda_build_without_gpu", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""The device names a user types (``cuda:N`` is accepted too)."""


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

    bfloat16 on the CPU because float16 matmuls there are slow and have no loss scaler [ours]; layers that need
    float32 (the deformable convolution) cast their inputs themselves.
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
