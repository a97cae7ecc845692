"""The deformable convolution op: the one place the rest of fapn calls.

``deform_conv2d`` has the signature and the tensor layout of
:func:`torchvision.ops.deform_conv2d` (DCNv1 without ``mask``, DCNv2 with it):

* ``offset``: ``[N, 2 * G * kh * kw, H_out, W_out]``, channel ``g * 2 * kh * kw + 2 * k + {0: dy, 1: dx}``
  for offset group ``g`` and kernel tap ``k = i * kw + j`` (row-major);
* ``mask``: ``[N, G * kh * kw, H_out, W_out]``, channel ``g * kh * kw + k``;
* offset group ``g`` covers input channels ``[g * C / G, (g + 1) * C / G)``.

The authors' DCNv2 extension uses the same layout, so their weights load one to one.

Backends are plain functions in :data:`BACKENDS`; one is chosen per call (``backend=``), else by the
``FAPN_DEFORM_BACKEND`` environment variable, else automatically (see :func:`default_backend`):

* ``"torchvision"``: :func:`torchvision.ops.deform_conv2d`, the reference (CPU and CUDA kernels);
* ``"pytorch"``: grid_sample + matmul (:mod:`fapn.ops.deform_conv_pytorch`), any device and dtype, exportable;
* ``"cpu"``: channels-last C++ kernels compiled on first use (:mod:`fapn.ops.deform_conv_cpu`), the fast CPU
  path; it computes with ``"pytorch"`` where it does not apply (no compiler, not a CPU float32/float64 tensor).

docs/deform_conv.md has the measurements behind the automatic choice.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torchvision
from torch import Tensor

from fapn.ops.deform_conv_cpu import deform_conv2d_cpu, kernels_available
from fapn.ops.deform_conv_pytorch import deform_conv2d_pytorch

__all__ = ["deform_conv2d", "BACKENDS", "BACKEND_ENV_VAR", "default_backend"]

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


def default_backend(device: torch.device | str) -> str:
    """The backend used when none is named.

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
    name = os.environ.get(BACKEND_ENV_VAR)
    if name:
        if name not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV_VAR}={name!r} is not a deformable-conv backend; valid: {sorted(BACKENDS)}")
        return name
    device_type = torch.device(device).type
    if device_type == "cpu":
        return "cpu" if kernels_available() else "pytorch"
    if device_type == "cuda":
        return "torchvision"
    return "pytorch"


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
        backend: a key of :data:`BACKENDS`; ``None`` picks :func:`default_backend` (in eager mode; while
            exporting or tracing torchvision's op, under ``torch.compile`` ``"pytorch"``, unless
            ``$FAPN_DEFORM_BACKEND`` names one).

    Returns:
        ``[N, C_out, H_out, W_out]``.

    Example:
        >>> x = torch.randn(1, 8, 5, 5)
        >>> w = torch.randn(4, 8, 3, 3)
        >>> off = torch.zeros(1, 2 * 9, 5, 5)
        >>> torch.allclose(deform_conv2d(x, off, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    name = backend
    if name is None:
        traced = None if os.environ.get(BACKEND_ENV_VAR) else _traced_backend()
        name = traced if traced is not None else default_backend(input.device)
    try:
        fn = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown deformable-conv backend {name!r}; valid backends: {sorted(BACKENDS)}"
        ) from None
    return fn(input, offset, weight, bias, stride, padding, dilation, mask)
