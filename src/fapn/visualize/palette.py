"""Class palettes and colour masks. The default palette is :func:`fapn.data.base.default_palette` (datasets
store it, and ``fapn.data`` sits below ``fapn.visualize``); it is re-exported here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fapn.data.base import default_palette

__all__ = ["default_palette", "as_palette", "colorize"]

IGNORE_COLOR = (0, 0, 0)


def _default_array(num_classes: int) -> np.ndarray:
    return np.asarray(default_palette(num_classes), dtype=np.uint8).reshape(-1, 3)


def as_palette(palette: Sequence[Sequence[int]] | np.ndarray | None, num_classes: int) -> np.ndarray:
    """``palette`` as ``[num_classes, 3]`` uint8, padded with :func:`default_palette` colours if short.

    Raises:
        ValueError: a palette whose rows are not ``[r, g, b]``.
    """
    if palette is None:
        return _default_array(num_classes)
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"a palette is a list of [r, g, b] rows, got an array of shape {array.shape}")
    array = np.clip(array, 0, 255).astype(np.uint8)
    if len(array) < num_classes:
        array = np.concatenate([array, _default_array(num_classes)[len(array) :]])
    return array[: max(num_classes, len(array))]


def colorize(
    label: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray | None = None, ignore_index: int | None = 255
) -> np.ndarray:
    """RGB image of a label map: class ``c`` gets ``palette[c]``; ignored and out-of-range labels are black.

    Args:
        label: ``[H, W]`` integer class indices.
        palette: ``[K, 3]`` RGB rows, or ``None`` for :func:`default_palette` over the labels present.
        ignore_index: label drawn black (``None``: none).

    Returns:
        ``[H, W, 3]`` uint8.

    Example:
        >>> colorize(np.array([[0, 1], [255, 1]]), [[10, 20, 30], [1, 2, 3]])[:, :, 0].tolist()
        [[10, 1], [0, 1]]
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a [H, W] label map, got shape {label.shape}")
    valid = label >= 0
    if ignore_index is not None:
        valid &= label != ignore_index
    num_classes = int(label[valid].max()) + 1 if valid.any() else 1
    colors = as_palette(palette, num_classes)
    valid &= label < len(colors)
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    out[:] = IGNORE_COLOR
    out[valid] = colors[label[valid]]
    return out
