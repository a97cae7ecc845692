"""``torch.export`` export (an ``ExportedProgram`` saved as ``.pt2``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fapn.export.check import DEFAULT_CHECK_SHAPES, ExportCheck, compare_outputs, dynamic_image_axes, input_name
from fapn.ops import deform_backend

__all__ = ["export_program"]


def export_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: tuple[int, int, int, int] = (2, 3, 64, 96),
    dynamic: bool = True,
    check: bool = True,
    check_shapes: Sequence[tuple[int, int, int, int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
) -> ExportCheck | None:
    """``torch.export.export`` the model (dynamic batch, height, width), save it, reload and compare.

    Load it with ``torch.export.load(path).module()`` (after ``import torchvision``, whose deformable conv
    the graph calls).

    Args:
        model: maps ``[N, 3, H, W]`` float32 to a tensor.
        path: the ``.pt2`` file to write.
        example_shape: example input shape.
        dynamic: dynamic batch, height and width.
        check: reload and compare with PyTorch on ``check_shapes``.
        tolerance: largest relative difference for the check to pass.
    """
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = {input_name(model): dynamic_image_axes(model)}
    with deform_backend("torchvision"), torch.no_grad():
        program = torch.export.export(model, (torch.randn(example_shape),), dynamic_shapes=dynamic_shapes, strict=False)
        torch.export.save(program, str(path))
    if not check:
        return None
    loaded = torch.export.load(str(path)).module()
    with deform_backend("torchvision"):
        return compare_outputs(
            model, loaded, "exported-program", str(path), check_shapes if dynamic else [example_shape], tolerance
        )
