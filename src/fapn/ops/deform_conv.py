"""The deformable convolution op: the one place the rest of fapn calls.

``deform_conv2d`` has the signature and the tensor layout of
:func:`torchvision.ops.deform_conv2d` (DCNv1 without ``mask``, DCNv2 with it):

* ``offset``: ``[N, 2 * G * kh * kw, H_out, W_out]``, channel ``g * 2 * kh * kw + 2 * k + {0: dy, 1: dx}``
  for offset group ``g`` and kernel tap ``k = i * kw + j`` (row-major);
* ``mask``: ``[N, G * kh * kw, H_out, W_out]``, channel ``g * kh * kw + k``;
* offset group ``g`` covers input channels ``[g * C / G, (g + 1) * C / G)``.

The authors' DCNv2 extension uses the same layout, so their weights load one to one.

Backends are plain functions in :data:`BACKENDS`. Which one computes a call is one rule
(:func:`resolve_backend`), first match wins:

1. inside ``with deform_backend(name):`` the innermost block's ``name``, whatever the call or the layer names
   (a :mod:`contextvars` variable: it holds for this thread or asyncio task only, never process-wide);
2. ``backend=`` of the call (a :class:`~fapn.layers.ModulatedDeformConv2d` passes the ``backend`` it was built
   with, i.e. ``deform_backend=`` of the FAM, the neck and the model builders);
3. ``$FAPN_DEFORM_BACKEND``, the user's default (read in one place, :func:`environment_backend`);
4. automatic: while a graph is captured, ``"torchvision"`` under ``torch.export`` / ``torch.onnx.export`` /
   ``torch.jit.trace`` and ``"pytorch"`` under ``torch.compile``; in eager mode :func:`default_backend`.

The backends:

* ``"torchvision"``: :func:`torchvision.ops.deform_conv2d`, the reference (CPU and CUDA kernels);
* ``"pytorch"``: grid_sample + matmul (:mod:`fapn.ops.deform_conv_pytorch`), any device and dtype, exportable;
* ``"cpu"``: channels-last C++ kernels compiled on first use (:mod:`fapn.ops.deform_conv_cpu`), the fast CPU
  path; it computes with ``"pytorch"`` where it does not apply (no compiler, not a CPU float32/float64 tensor).

docs/deform_conv.md has the measurements behind the automatic choice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torchvision
from torch import Tensor

from fapn.ops.deform_conv_cpu import deform_conv2d_cpu, kernels_available
from fapn.ops.deform_conv_pytorch import deform_conv2d_pytorch

__all__ = [
    "deform_conv2d",
    "deform_backend",
    "resolve_backend",
    "default_backend",
    "environment_backend",
    "check_backend",
    "BACKENDS",
    "BACKEND_ENV_VAR",
]

_PairLike = int | tuple[int, int]

DeformConvFn = Callable[..., Tensor]


def _torchvision_backend(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: _PairLike = 1,
    padding: _PairLike = 0,
    dilation: _PairLike = 1,
    mask: Tensor | None = None,
) -> Tensor:
    # torchvision's kernels exist for float32/float64 only (bfloat16 raises on CPU), so reduced precision
    # is computed in float32 and cast back, as torchvision itself does under autocast.
    dtype = input.dtype
    if dtype not in (torch.float32, torch.float64):
        input, offset, weight = input.float(), offset.float(), weight.float()
        bias = bias.float() if bias is not None else None
        mask = mask.float() if mask is not None else None
    out = torchvision.ops.deform_conv2d(
        input, offset, weight, bias=bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )
    return out.to(dtype)


BACKENDS: dict[str, DeformConvFn] = {
    "torchvision": _torchvision_backend,
    "pytorch": deform_conv2d_pytorch,
    "cpu": deform_conv2d_cpu,
}
"""Every backend by name; each has :func:`deform_conv2d`'s positional signature (without ``backend``)."""

BACKEND_ENV_VAR = "FAPN_DEFORM_BACKEND"
"""The environment variable holding the user's default backend (rule 3 of :func:`resolve_backend`)."""

_BLOCK_BACKEND: ContextVar[str | None] = ContextVar("fapn_deform_backend", default=None)


def check_backend(name: str) -> str:
    """``name`` if it is a key of :data:`BACKENDS`, else a ``ValueError`` listing the valid ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown deformable-conv backend {name!r}; valid backends: {sorted(BACKENDS)}")
    return name


def environment_backend() -> str | None:
    """``$FAPN_DEFORM_BACKEND`` (checked), or ``None`` when it is unset or empty. The one place it is read."""
    name = os.environ.get(BACKEND_ENV_VAR)
    if not name:
        return None
    if name not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV_VAR}={name!r} is not a deformable-conv backend; valid: {sorted(BACKENDS)}")
    return name


@contextlib.contextmanager
def deform_backend(name: str | None) -> Iterator[None]:
    """Within the block, every deformable conv of this thread (or asyncio task) computes with backend ``name``.

    The block overrides what calls and layers name (rule 1 of :func:`resolve_backend`): that is what the exporters
    need (torchvision's single op in the graph, whatever backend the model was built with). Blocks nest, the
    innermost wins; ``deform_backend(None)`` restores the normal rules inside an outer block. Nothing process-wide
    changes: other threads are not affected. ``torch.compile`` reads the block when it compiles, not on each call.

    Args:
        name: a key of :data:`BACKENDS`, or ``None``.

    Example:
        >>> x, w = torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3)
        >>> with deform_backend("pytorch"):
        ...     out = deform_conv2d(x, torch.zeros(1, 18, 5, 5), w, padding=1)
        ...     resolve_backend("cpu", x.device)
        'pytorch'
    """
    token = _BLOCK_BACKEND.set(None if name is None else check_backend(name))
    try:
        yield
    finally:
        _BLOCK_BACKEND.reset(token)


def _device_backend(device: torch.device | str) -> str:
    device_type = torch.device(device).type
    if device_type == "cpu":
        return "cpu" if kernels_available() else "pytorch"
    if device_type == "cuda":
        return "torchvision"
    return "pytorch"


def default_backend(device: torch.device | str) -> str:
    """The backend an eager call on ``device`` uses when neither a block nor the call names one.

    ``$FAPN_DEFORM_BACKEND`` if set; else ``"cpu"`` on the CPU when its kernels build (``"pytorch"`` when they
    do not), torchvision's CUDA kernel on CUDA, and ``"pytorch"`` on any other device.

    Args:
        device: the device of the input.

    Returns:
        a key of :data:`BACKENDS`.

    Example:
        >>> default_backend(torch.device("cuda"))
        'torchvision'
    """
    return environment_backend() or _device_backend(device)


def _traced_backend() -> str | None:
    """The backend to use, when none is named, while a graph is being captured; ``None`` in eager mode.

    Exports (``torch.export``, ``torch.jit.trace``, so ONNX) keep torchvision's op, one node that maps to ONNX
    ``DeformConv``; ``torch.compile`` gets the pure-PyTorch ops it can fuse (the ctypes kernels would break
    the graph).
    """
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return "torchvision"
    if torch.compiler.is_compiling():
        return "pytorch"
    return None


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend that computes a call: the one rule of this module (see its docstring), first match wins.

    Args:
        backend: what the call (or the layer) names, or ``None``.
        device: the device of the input.

    Returns:
        a key of :data:`BACKENDS`.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    block = _BLOCK_BACKEND.get()
    if block is not None:
        return block
    if backend is not None:
        return check_backend(backend)
    return environment_backend() or _traced_backend() or _device_backend(device)


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: _PairLike = 1,
    padding: _PairLike = 0,
    dilation: _PairLike = 1,
    mask: Tensor | None = None,
    *,
    backend: str | None = None,
) -> Tensor:
    """Deformable convolution (DCNv2 when ``mask`` is given), torchvision's signature and layout.

    Args:
        input: ``[N, C_in, H, W]``.
        offset: ``[N, 2 * G * kh * kw, H_out, W_out]``, ``(dy, dx)`` pairs per offset group and tap.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or ``None``.
        stride, padding, dilation: as for :func:`torch.nn.functional.conv2d`.
        mask: ``[N, G * kh * kw, H_out, W_out]`` modulation scalars (already through a sigmoid) or ``None``.
        backend: a key of :data:`BACKENDS`, or ``None``; :func:`resolve_backend` decides (a
            :func:`deform_backend` block overrides it).

    Returns:
        ``[N, C_out, H_out, W_out]``.

    Example:
        >>> x = torch.randn(1, 8, 5, 5)
        >>> w = torch.randn(4, 8, 3, 3)
        >>> off = torch.zeros(1, 2 * 9, 5, 5)
        >>> torch.allclose(deform_conv2d(x, off, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    name = resolve_backend(backend, input.device)
    return BACKENDS[name](input, offset, weight, bias, stride, padding, dilation, mask)
