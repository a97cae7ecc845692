"""Sliding-window inference: logits of a large image from overlapping crops."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["sliding_window_logits", "window_starts"]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` covering ``[0, length)``; the last one
    is moved back to end exactly at ``length``.

    Example:
        >>> window_starts(10, 4, 3)
        [0, 3, 6]
        >>> window_starts(11, 4, 3)
        [0, 3, 6, 7]
    """
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def sliding_window_logits(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    num_classes: int,
    window: tuple[int, int],
    stride: tuple[int, int] | None = None,
) -> Tensor:
    """Logits of ``images`` computed on overlapping windows and averaged where they overlap.

    Args:
        model: maps ``[N, 3, h, w]`` to ``[N, num_classes, h, w]`` logits.
        images: ``[N, 3, H, W]`` normalised images.
        num_classes: channels of the logits.
        window: ``(height, width)`` of a crop; a side larger than the image is clipped to it.
        stride: step between crops, ``None`` for two thirds of the window (a third of overlap).

    Returns:
        ``[N, num_classes, H, W]`` float32 logits.

    Example:
        >>> double = lambda x: torch.cat([x[:, :1], -x[:, :1]], dim=1)
        >>> x = torch.randn(1, 3, 50, 70)
        >>> torch.allclose(sliding_window_logits(double, x, 2, (32, 32)), double(x))
        True
    """
    n, _, height, width = images.shape
    win_h, win_w = min(window[0], height), min(window[1], width)
    if stride is None:
        stride = (max(1, win_h * 2 // 3), max(1, win_w * 2 // 3))
    if stride[0] < 1 or stride[1] < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    logits = images.new_zeros((n, num_classes, height, width), dtype=torch.float32)
    counts = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for top in window_starts(height, win_h, stride[0]):
        for left in window_starts(width, win_w, stride[1]):
            crop = images[:, :, top : top + win_h, left : left + win_w]
            logits[:, :, top : top + win_h, left : left + win_w] += model(crop).float()
            counts[:, :, top : top + win_h, left : left + win_w] += 1
    return logits / counts
