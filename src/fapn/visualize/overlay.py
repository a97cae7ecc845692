"""Segmentations drawn over their images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fapn.visualize.palette import colorize

__all__ = ["overlay", "blend"]


def blend(image: np.ndarray, color: np.ndarray, alpha: float = 0.5, where: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * image + alpha * color``, optionally only where ``where`` is true.

    Args:
        image: ``[H, W, 3]`` uint8.
        color: ``[H, W, 3]`` uint8.
        alpha: weight of ``color``.
        where: ``[H, W]`` bool mask, or ``None`` for everywhere.
    """
    if image.shape != color.shape:
        raise ValueError(f"image {image.shape} and colour {color.shape} must have the same shape")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if where is not None:
        out = np.where(where[..., None], out, image)
    return out


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: Sequence[Sequence[int]] | np.ndarray | None = None,
    alpha: float = 0.5,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """The label map's colours blended over the image; ignored pixels keep the image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        label: ``[H, W]`` class indices.
        palette: ``[K, 3]`` RGB rows (``None``: :func:`~fapn.visualize.default_palette`).
        alpha: opacity of the colours.
        ignore_index: label left uncoloured.

    Returns:
        ``[H, W, 3]`` uint8.

    Example:
        >>> img = np.full((2, 2, 3), 100, np.uint8)
        >>> overlay(img, np.array([[0, 255], [0, 0]]), [[200, 0, 0]], alpha=0.5)[0, :, 0].tolist()
        [150, 100]
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {image.shape}")
    if image.shape[:2] != np.shape(label):
        raise ValueError(f"image {image.shape[:2]} and label map {np.shape(label)} sizes differ")
    label = np.asarray(label)
    where = label >= 0 if ignore_index is None else (label >= 0) & (label != ignore_index)
    return blend(image, colorize(label, palette, ignore_index), alpha, where)
