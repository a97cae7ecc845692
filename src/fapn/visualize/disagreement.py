"""Where models' label maps differ, drawn over the image: with a ground truth and two models, which of the two
is right there.

Example:
    >>> import numpy as np
    >>> a, b = np.array([[0, 1], [1, 1]]), np.array([[0, 1], [2, 1]])
    >>> picture, fraction = disagreement_map(np.zeros((2, 2, 3), np.uint8), [a, b])
    >>> picture.shape[1], fraction
    (2, 0.25)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fapn.visualize.legend import add_legend
from fapn.visualize.overlay import blend

__all__ = ["disagreement_map", "DISAGREEMENT_COLORS"]

DISAGREEMENT_COLORS: dict[str, tuple[int, int, int]] = {
    "models disagree": (230, 25, 75),
    "only {second} right": (60, 180, 75),
    "only {first} right": (245, 130, 48),
    "both wrong": (230, 25, 75),
}
"""Colours of the disagreement map; ``{first}`` / ``{second}`` are the two models' names."""


def disagreement_map(
    image: np.ndarray,
    labels: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    ground_truth: np.ndarray | None = None,
    ignore_index: int | None = 255,
    alpha: float = 0.75,
) -> tuple[np.ndarray, float]:
    """The pixels where the label maps differ, coloured over a dimmed grey copy of the image, with a legend.

    Without ``ground_truth`` (or with other than two models) every such pixel is red. With a ground truth and
    two models each such pixel says who is right: green where only the second is, orange where only the first
    is, red where both are wrong (ignored ground-truth pixels stay red).

    Args:
        image: ``[H, W, 3]`` uint8.
        labels: ``[H, W]`` label maps, at least two.
        names: a name per label map, for the legend (default ``model 1``, ``model 2``, ...).
        ground_truth: ``[H, W]`` labels, or ``None``.
        ignore_index: the ground truth's unlabelled value.
        alpha: opacity of the colours.

    Returns:
        ``([H', W, 3] uint8 picture with the legend below, fraction of the pixels where the maps differ)``.
    """
    if len(labels) < 2:
        raise ValueError(f"a disagreement map needs at least two label maps, got {len(labels)}")
    shape = np.shape(labels[0])
    if any(np.shape(label) != shape for label in labels) or image.shape[:2] != shape:
        raise ValueError(
            f"image {image.shape[:2]} and label maps {[np.shape(label) for label in labels]} must share one size"
        )
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(labels))]
    stack = np.stack([np.asarray(label) for label in labels])
    differ = np.any(stack != stack[:1], axis=0)
    grey = np.repeat(image.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    canvas = np.rint(0.35 * grey + 0.65 * 255 * 0.5).astype(np.uint8)
    entries: list[tuple[str, tuple[int, int, int], np.ndarray]] = []
    if ground_truth is not None and len(labels) == 2:
        gt = np.asarray(ground_truth)
        first, second = stack[0] == gt, stack[1] == gt
        if ignore_index is not None:
            first, second = first & (gt != ignore_index), second & (gt != ignore_index)
        keys = ("only {second} right", "only {first} right", "both wrong")
        for key, where in zip(keys, (differ & second, differ & first, differ & ~first & ~second)):
            entries.append((key.format(first=names[0], second=names[1]), DISAGREEMENT_COLORS[key], where))
    else:
        entries.append(("models disagree", DISAGREEMENT_COLORS["models disagree"], differ))
    for _, color, where in entries:
        canvas = blend(canvas, np.broadcast_to(np.array(color, np.uint8), canvas.shape).copy(), alpha, where)
    picture = add_legend(canvas, [name for name, _, _ in entries], [color for _, color, _ in entries])
    return picture, float(differ.mean())
