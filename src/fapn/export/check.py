"""Checking an exported model against PyTorch on random inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ExportCheck", "compare_outputs", "DEFAULT_CHECK_SHAPES", "dynamic_image_axes", "input_name"]

DEFAULT_CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 96, 128), (2, 3, 64, 160))
"""Input shapes of the check: two batch sizes and two image sizes, so dynamic axes are exercised."""


def input_name(model: nn.Module) -> str:
    """Name of the first argument of ``model.forward`` (what ``dynamic_shapes`` is keyed by)."""
    import inspect

    return next(iter(inspect.signature(model.forward).parameters))


def dynamic_image_axes(model: nn.Module | None = None) -> dict[int, Any]:
    """Dynamic batch, height and width of an ``[N, 3, H, W]`` input for ``torch.export``. Height and width
    start at 33: at 32 the stride-32 map is 1x1, a size the tracer specialises.

    Raises:
        ValueError: ``model`` has an encoder with window attention (timm's Swin). torch.export's symbolic shape
            solver did not finish a dynamic-size trace of Swin's window partition and padding in 6 minutes of
            CPU even for a one-block-per-stage Swin (torch 2.14, measured), while a fixed-size export takes
            seconds; so such a model is exported at a fixed size, and saying so beats hanging.
    """
    windowed = [m for m in (model.modules() if model is not None else ()) if getattr(m, "window_attention", False)]
    if windowed:
        name = getattr(windowed[0], "name", "") or type(windowed[0]).__name__
        raise ValueError(
            f"{name} has window attention, which torch.export cannot trace at a dynamic height and width in "
            "reasonable time; export at a fixed size: dynamic=False with example_shape=(N, 3, H, W), or "
            "'fapn export --static --example-size HxW' (the size of the images the model will see)"
        )
    return {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=33), 3: torch.export.Dim("width", min=33)}


@dataclass
class ExportCheck:
    """The outcome of comparing an exported model with PyTorch.

    ``relative_difference`` is the largest absolute difference over all checked outputs divided by the largest
    absolute PyTorch output (the output scale); ``passed`` means it is at most ``tolerance``.
    """

    format: str
    path: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    max_abs_difference: float = 0.0
    output_scale: float = 0.0
    tolerance: float = 1e-4
    notes: list[str] = field(default_factory=list)

    @property
    def relative_difference(self) -> float:
        return self.max_abs_difference / max(self.output_scale, 1e-12)

    @property
    def passed(self) -> bool:
        return self.relative_difference <= self.tolerance

    def summary(self) -> str:
        verdict = "OK" if self.passed else "MISMATCH"
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        return (
            f"{self.format} check {verdict}: max |exported - pytorch| = {self.max_abs_difference:.3g} "
            f"with output scale max|pytorch| = {self.output_scale:.3g}, relative {self.relative_difference:.3g} "
            f"(tolerance {self.tolerance:g}) on random inputs {shapes}" + "".join(f"; {n}" for n in self.notes)
        )


@torch.no_grad()
def compare_outputs(
    model: nn.Module,
    exported: Callable[[Tensor], Tensor],
    format: str,
    path: str,
    shapes: Sequence[tuple[int, int, int, int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportCheck:
    """Run ``model`` and ``exported`` on random normal inputs of each shape and record the largest difference.

    Args:
        model: the PyTorch model (eval mode).
        exported: the exported model as a callable on a CPU float32 tensor, returning a tensor.
        format: name for the report.
        path: file for the report.
        shapes: input shapes.
        tolerance: largest passing relative difference.
        seed: random seed of the inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    check = ExportCheck(format=format, path=path, tolerance=tolerance)
    device = next(model.parameters()).device
    for shape in shapes:
        x = torch.randn(shape, generator=generator)
        reference = model(x.to(device)).float().cpu()
        got = torch.as_tensor(exported(x)).float().cpu()
        if got.shape != reference.shape:
            raise AssertionError(f"{format} output shape {tuple(got.shape)} != PyTorch {tuple(reference.shape)}")
        check.shapes.append(tuple(shape))
        check.max_abs_difference = max(check.max_abs_difference, float((got - reference).abs().max()))
        check.output_scale = max(check.output_scale, float(reference.abs().max()))
    return check
