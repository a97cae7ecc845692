"""Parameters and multiply-accumulates (MACs) of a model, in the paper's convention and in full.

Two conventions, side by side:

* ``paper``: MACs as fvcore counts them (the convention of FLOPs in detection/segmentation papers and, by
  the arithmetic in the notes, of the supplementary's Table 1): convolutions, matrix products, batch/group/layer
  norm, bilinear and nearest upsampling, adaptive average pooling; everything else (ReLU, additions, max
  pooling, ...) is free, and so is a deformable convolution, which fvcore does not know.
* ``full``: the same, plus every modulated deformable convolution counted explicitly: per output pixel,
  ``C_out * C_in/groups * kh * kw`` for the product, plus ``C_in * kh * kw * (4 + 1)`` for the bilinear sampling
  (4 multiply-adds per sampled value) and the mask multiply.

Counting runs the model once under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, so it sees the
ops actually executed (any input size, any model). Whatever backend computes the deformable conv, the ops inside
a :class:`~fapn.layers.ModulatedDeformConv2d` are replaced by the formula above (``full``) or by nothing
(``paper``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from fapn.layers.deform_conv import ModulatedDeformConv2d

__all__ = [
    "Convention",
    "Complexity",
    "count_parameters",
    "count_macs",
    "profile_model",
    "deform_conv_macs",
]

Convention = Literal["paper", "full"]

aten = torch.ops.aten


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _conv_macs(args: tuple[Any, ...], out: Tensor) -> int:
    weight = args[1]
    # weight [C_out, C_in/groups, kh, kw] (or transposed [C_in, C_out/groups, ...]): fvcore's formula,
    # N * prod(weight) * prod(out spatial) for a plain conv.
    transposed = bool(args[6]) if len(args) > 6 else False
    if transposed:
        x = args[0]
        return _numel(x.shape) * _numel(weight.shape[1:])
    return out.shape[0] * _numel(weight.shape) * _numel(out.shape[2:])


def _mm_macs(args: tuple[Any, ...], out: Tensor) -> int:
    a, b = args[-2], args[-1]
    return _numel(a.shape) * b.shape[-1]


def _bmm_macs(args: tuple[Any, ...], out: Tensor) -> int:
    a, b = args[-2], args[-1]
    return _numel(a.shape) * b.shape[-1]


def _batch_norm_macs(training: bool, x: Tensor, weight: Tensor | None) -> int:
    if training:
        return _numel(x.shape) * (5 if weight is not None else 4)
    return _numel(x.shape) * (2 if weight is not None else 1)


def _handlers() -> dict[Any, Callable[[tuple[Any, ...], Any], int]]:
    def first_out(out: Any) -> Tensor:
        return out[0] if isinstance(out, (tuple, list)) else out

    handlers: dict[Any, Callable[[tuple[Any, ...], Any], int]] = {
        aten.convolution.default: lambda a, o: _conv_macs(a, first_out(o)),
        aten.mm.default: lambda a, o: _mm_macs(a, o),
        aten.addmm.default: lambda a, o: _mm_macs(a, o),
        aten.bmm.default: lambda a, o: _bmm_macs(a, o),
        aten.baddbmm.default: lambda a, o: _bmm_macs(a, o),
        # native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)
        aten.native_batch_norm.default: lambda a, o: _batch_norm_macs(bool(a[5]), a[0], a[1]),
        # _native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, momentum, eps)
        aten._native_batch_norm_legit.default: lambda a, o: _batch_norm_macs(bool(a[5]), a[0], a[1]),
        aten._native_batch_norm_legit_no_training.default: lambda a, o: _batch_norm_macs(False, a[0], a[1]),
        aten.native_group_norm.default: lambda a, o: _numel(a[0].shape) * (5 if a[1] is not None else 4),
        aten.native_layer_norm.default: lambda a, o: _numel(a[0].shape) * (5 if a[2] is not None else 4),
        aten.upsample_nearest2d.default: lambda a, o: _numel(first_out(o).shape),
        aten.upsample_nearest2d.vec: lambda a, o: _numel(first_out(o).shape),
        aten.upsample_bilinear2d.default: lambda a, o: 4 * _numel(first_out(o).shape),
        aten.upsample_bilinear2d.vec: lambda a, o: 4 * _numel(first_out(o).shape),
        aten._adaptive_avg_pool2d.default: lambda a, o: _numel(a[0].shape),
        aten.grid_sampler_2d.default: lambda a, o: 4 * _numel(first_out(o).shape),
    }
    return handlers


_HANDLERS = _handlers()


def deform_conv_macs(module: ModulatedDeformConv2d, output: Tensor) -> int:
    """Explicit MACs of one modulated deformable conv call: product + bilinear sampling + mask multiply.

    Args:
        module: the layer (for its channels and kernel).
        output: its output ``[N, C_out, H_out, W_out]``.
    """
    pixels = output.shape[0] * output.shape[2] * output.shape[3]
    samples = module.in_channels * module.taps
    return pixels * (module.out_channels * samples + samples * (4 + 1))


class _MacCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.suppressed = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.suppressed == 0:
            handler = _HANDLERS.get(func)
            if handler is not None:
                self.macs += int(handler(args, out))
        return out


def count_parameters(model: nn.Module) -> int:
    """``sum(p.numel())`` over all parameters (what Table 1 reports; shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: Tensor | tuple[Any, ...], convention: Convention = "paper") -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``inputs``.

    Args:
        model: any module; it is run once as it is (call ``.eval()`` first for inference cost).
        inputs: a tensor or a tuple of positional arguments.
        convention: ``"paper"`` (fvcore's, deformable conv free) or ``"full"`` (deformable conv counted).

    Example:
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 10, 10))
        21600
    """
    if convention not in ("paper", "full"):
        raise ValueError(f"convention must be 'paper' or 'full', got {convention!r}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = _MacCounter()
    handles = []

    def pre_hook(module: nn.Module, _args: Any) -> None:
        counter.suppressed += 1

    def post_hook(module: nn.Module, _args: Any, output: Tensor) -> None:
        counter.suppressed -= 1
        if convention == "full" and counter.suppressed == 0:
            counter.macs += deform_conv_macs(module, output)  # type: ignore[arg-type]

    for module in model.modules():
        if isinstance(module, ModulatedDeformConv2d):
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad(), counter:
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return counter.macs


@dataclass(frozen=True)
class Complexity:
    """Parameters and MACs of a model at one input size."""

    params: int
    macs_paper: int
    macs_full: int
    input_shape: tuple[int, ...]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs_paper(self) -> float:
        return self.macs_paper / 1e9

    @property
    def gmacs_full(self) -> float:
        return self.macs_full / 1e9


def profile_model(
    model: nn.Module, input_shape: Sequence[int] = (1, 3, 768, 1536), *, on_meta: bool = True
) -> Complexity:
    """Parameters and MACs (both conventions) of ``model`` in eval mode on a random input of ``input_shape``.

    Args:
        model: the model (left unchanged).
        input_shape: ``[N, C, H, W]`` of the input.
        on_meta: run a copy of the model on the ``meta`` device (shapes only, no arithmetic: instant at any
            size). Set ``False`` for a model with ops that have no meta kernel.

    Example:
        >>> from fapn.models import realtime_fapn
        >>> c = profile_model(realtime_fapn(neck="fpn"), (1, 3, 768, 1536))
        >>> round(c.params_m, 3), round(c.gmacs_paper, 1)  # doctest: +SKIP
        (11.367, 44.8)
    """
    params = count_parameters(model)
    if on_meta:
        model = copy.deepcopy(model).to("meta")
        device = torch.device("meta")
    else:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(*input_shape, device=device)
        paper = count_macs(model, x, "paper")
        full = count_macs(model, x, "full")
    finally:
        model.train(was_training)
    return Complexity(params, paper, full, tuple(int(s) for s in input_shape))
