"""Instance masks drawn over their images with their boundaries outlined (the supplementary's Figure 2 style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fapn.data.base import default_palette
from fapn.visualize.overlay import blend

__all__ = ["instance_boundaries", "draw_instances"]


def instance_boundaries(masks: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary band of binary masks ``[N, H, W]``: mask pixels within ``width`` pixels (chessboard
    distance) of a pixel outside the mask; the image border does not count as outside.

    Example:
        >>> m = np.zeros((1, 5, 5), bool)
        >>> m[0, 1:4, 1:4] = True
        >>> instance_boundaries(m)[0].astype(int)[2].tolist()
        [0, 1, 0, 1, 0]
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    if len(masks) == 0:
        return masks.astype(bool)
    inside = torch.from_numpy(np.ascontiguousarray(masks)).bool()[:, None]
    outside = F.pad((~inside).float(), (width,) * 4, mode="replicate")
    near_outside = F.max_pool2d(outside, 2 * width + 1, stride=1) > 0
    return (inside & near_outside)[:, 0].numpy()


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    scores: Sequence[float] | np.ndarray | None = None,
    score_threshold: float = 0.5,
    alpha: float = 0.45,
    boundary_width: int = 1,
    colors: Sequence[Sequence[int]] | np.ndarray | None = None,
) -> np.ndarray:
    """Each instance's mask blended over the image in its own colour, its boundary drawn solid on top.

    Args:
        image: ``[H, W, 3]`` uint8.
        masks: ``[N, H, W]`` bool (or probabilities, thresholded at 0.5).
        scores: per instance; instances below ``score_threshold`` are not drawn.
        score_threshold: lowest score drawn.
        alpha: weight of the mask colour.
        boundary_width: boundary thickness in pixels.
        colors: one RGB colour per instance (default: the library palette, by instance index).

    Returns:
        ``[H, W, 3]`` uint8.

    Example:
        >>> image = np.zeros((4, 6, 3), np.uint8)
        >>> masks = np.zeros((1, 4, 6), bool)
        >>> masks[0, 1:3, 1:5] = True
        >>> draw_instances(image, masks, colors=[[255, 0, 0]])[1, 1].tolist()
        [255, 0, 0]
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    masks = np.asarray(masks)
    if masks.dtype != bool:
        masks = masks >= 0.5
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {image.shape[:2]}")
    keep = np.ones(len(masks), bool) if scores is None else np.asarray(scores) >= score_threshold
    masks = masks[keep]
    palette = np.asarray(colors if colors is not None else default_palette(len(masks)), dtype=np.uint8)
    if len(palette) < len(masks):
        raise ValueError(f"{len(masks)} instances but {len(palette)} colours")
    out = image.copy()
    # larger instances first, so that small ones stay visible on top
    order = np.argsort([-m.sum() for m in masks], kind="stable")
    edges = instance_boundaries(masks, boundary_width)
    for index in order:
        color = np.broadcast_to(palette[index], image.shape)
        out = blend(out, np.ascontiguousarray(color), alpha, where=masks[index])
    for index in order:
        out[edges[index]] = palette[index]
    return out
