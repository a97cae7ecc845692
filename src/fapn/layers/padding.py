"""Padding an image batch to a multiple of the network's largest stride, in a form that exports to ONNX."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_to_multiple", "ceil_div"]


def ceil_div(size: int, divisor: int) -> int:
    """``ceil(size / divisor)`` for non-negative ``size``, with non-negative operands only.

    ``-(-size // divisor)`` is the same in Python but not once exported: ONNX's integer ``Div`` truncates toward
    zero, so a symbolic size would be cropped one row short (ours, found by an onnxruntime check).

    Example:
        >>> ceil_div(70, 8), ceil_div(64, 8)
        (9, 8)
    """
    return (size + divisor - 1) // divisor


def pad_to_multiple(images: Tensor, divisor: int, value: float = 0.0) -> Tensor:
    """Pad the bottom and right of ``[..., H, W]`` with ``value`` to the next multiples of ``divisor``.

    Unconditional (a copy when nothing is padded), so that an exported graph has no branch on the input size.

    Args:
        images: ``[..., H, W]``.
        divisor: the size divisibility (the encoder's largest stride, or Swin's window times its stride).
        value: the fill (0 for images, the ignore index for label maps).

    Returns:
        ``[..., ceil_div(H, divisor) * divisor, ceil_div(W, divisor) * divisor]``, ``images`` at the top left.

    Example:
        >>> import torch
        >>> pad_to_multiple(torch.ones(1, 3, 70, 50), 32).shape
        torch.Size([1, 3, 96, 64])
    """
    height, width = images.shape[-2:]
    return F.pad(
        images, (0, (divisor - width % divisor) % divisor, 0, (divisor - height % divisor) % divisor), value=value
    )
