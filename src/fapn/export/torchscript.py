"""TorchScript (traced) export."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fapn.export.check import DEFAULT_CHECK_SHAPES, ExportCheck, compare_outputs
from fapn.ops import deform_backend

__all__ = ["export_torchscript"]


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: tuple[int, int, int, int] = (2, 3, 64, 96),
    check: bool = True,
    check_shapes: Sequence[tuple[int, int, int, int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
) -> ExportCheck | None:
    """Trace the model with the torchvision deformable conv, save it, reload it and compare with PyTorch.

    The traced graph calls ``torchvision::deform_conv2d``: ``import torchvision`` before ``torch.jit.load``.

    Args:
        model: maps ``[N, 3, H, W]`` float32 to a tensor.
        path: the ``.pt`` file to write.
        example_shape: input shape used for tracing.
        check: reload the file and compare with PyTorch on ``check_shapes`` (other sizes than the trace's).
        tolerance: largest relative difference for the check to pass.

    Example:
        >>> from fapn.models import realtime_fapn
        >>> export_torchscript(realtime_fapn(num_classes=3).eval(), "fapn.ts.pt").passed  # doctest: +SKIP
        True
    """
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deform_backend("torchvision"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the TorchScript route
        traced = torch.jit.trace(model, torch.randn(example_shape), check_trace=False)
        torch.jit.save(traced, str(path))
    if not check:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with deform_backend("torchvision"):
        return compare_outputs(model, loaded, "torchscript", str(path), check_shapes, tolerance)
