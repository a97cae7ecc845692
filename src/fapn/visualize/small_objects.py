"""The supplementary's Figure 3: detection, instance and panoptic results of FPN (top) and FaPN (bottom) on one
image per group, with the small objects outlined.

Each group is a 2x3 grid: columns are object detection (boxes), instance segmentation (masks with outlined
boundaries, :func:`~fapn.visualize.instances.draw_instances`) and panoptic segmentation (every segment in its
category's colour, boundaries between segments in white); the top row is FPN, the bottom FaPN. The small objects
(COCO's small, under 32^2 pixels) are outlined in every panel with a yellow frame a few pixels outside their box,
and nothing else is, so that the eye goes to them; the frames are the same in both rows, so one sees which model
found what inside them. A legend of the thing (and stuff) classes goes below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fapn.visualize.grid import _font, image_grid, resize_rgb
from fapn.visualize.instances import instance_boundaries
from fapn.visualize.legend import add_legend
from fapn.visualize.overlay import blend
from fapn.visualize.palette import as_palette

__all__ = ["SMALL_OUTLINE_COLOR", "draw_boxes", "draw_panoptic", "outline_boxes", "figure3_group", "stack_groups"]

SMALL_OUTLINE_COLOR = (255, 230, 0)
"""The colour of the frames around small objects."""


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[int],
    palette: Sequence[Sequence[int]] | np.ndarray,
    width: int = 1,
) -> np.ndarray:
    """Boxes ``XYXY`` outlined in their class colour (``palette[label]``).

    Example:
        >>> out = draw_boxes(np.zeros((8, 8, 3), np.uint8), [[1, 1, 5, 5]], [1], [[0, 0, 0], [255, 0, 0]])
        >>> out[1, 3].tolist(), out[3, 3].tolist()
        ([255, 0, 0], [0, 0, 0])
    """
    colors = as_palette(palette, max([int(label) + 1 for label in labels], default=1))
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for box, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels):
        x0, y0, x1, y1 = (round(v) for v in box)
        draw.rectangle(
            [x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=tuple(int(c) for c in colors[int(label)]), width=width
        )
    return np.asarray(canvas)


def outline_boxes(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    margin: int = 3,
    color: Sequence[int] = SMALL_OUTLINE_COLOR,
    width: int = 1,
) -> np.ndarray:
    """A frame ``margin`` pixels outside each ``XYXY`` box (clipped to the image): the small-object highlight.

    Example:
        >>> out = outline_boxes(np.zeros((10, 10, 3), np.uint8), [[4, 4, 6, 6]], margin=2)
        >>> out[2, 4].tolist(), out[5, 5].tolist()
        ([255, 230, 0], [0, 0, 0])
    """
    height, width_px = image.shape[:2]
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        frame = [
            max(0, round(x0) - margin),
            max(0, round(y0) - margin),
            min(width_px - 1, round(x1) - 1 + margin),
            min(height - 1, round(y1) - 1 + margin),
        ]
        draw.rectangle(frame, outline=tuple(int(c) for c in color), width=width)
    return np.asarray(canvas)


def draw_panoptic(
    image: np.ndarray,
    panoptic: np.ndarray,
    segments: Sequence[Mapping[str, object]],
    thing_palette: Sequence[Sequence[int]] | np.ndarray,
    stuff_palette: Sequence[Sequence[int]] | np.ndarray,
    alpha: float = 0.55,
) -> np.ndarray:
    """Each panoptic segment blended over the image in its category's colour (things from ``thing_palette``,
    stuff from ``stuff_palette``, by ``category_id``), with the boundary of every segment in white.

    Args:
        panoptic: ``[H, W]`` segment ids, 0 = none.
        segments: ``{"id", "isthing", "category_id"}`` per segment (:func:`~fapn.models.detection.panoptic_merge`).

    Example:
        >>> pan = np.zeros((6, 6), np.int64)
        >>> pan[1:5, 1:5] = 1
        >>> out = draw_panoptic(np.zeros((6, 6, 3), np.uint8), pan, [{"id": 1, "isthing": True, "category_id": 1}],
        ...                     [[0, 0, 0], [200, 0, 0]], [[0, 0, 0]], alpha=1.0)
        >>> out[2, 2].tolist(), out[1, 1].tolist()
        ([200, 0, 0], [255, 255, 255])
    """
    panoptic = np.asarray(panoptic)
    if panoptic.shape != image.shape[:2]:
        raise ValueError(f"panoptic map {panoptic.shape} and image {image.shape[:2]} sizes differ")
    out = np.asarray(image).copy()
    masks = []
    for segment in segments:
        mask = panoptic == int(segment["id"])  # type: ignore[call-overload]
        if not mask.any():
            continue
        category = int(segment["category_id"])  # type: ignore[call-overload]
        palette = thing_palette if segment["isthing"] else stuff_palette
        color = as_palette(palette, category + 1)[category]
        out = blend(out, np.ascontiguousarray(np.broadcast_to(color, out.shape)), alpha, where=mask)
        masks.append(mask)
    if masks:
        out[instance_boundaries(np.stack(masks)).any(axis=0)] = 255
    return out


def figure3_group(
    panels: Sequence[Sequence[np.ndarray]],
    row_names: Sequence[str],
    column_names: Sequence[str],
    small_boxes: np.ndarray | Sequence[Sequence[float]] = (),
    width: int = 320,
    notes: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """One group of Figure 3: ``panels[row][column]`` (full-size pictures of one image) with the small objects
    framed, enlarged to ``width`` each, titled ``"{row} {column}"`` (plus ``notes[row][column]``).

    Example:
        >>> p = np.zeros((16, 16, 3), np.uint8)
        >>> figure3_group([[p, p], [p, p]], ["FPN", "FaPN"], ["boxes", "masks"], [[2, 2, 6, 6]], width=32).shape
        (108, 68, 3)
    """
    if len(panels) != len(row_names) or any(len(row) != len(column_names) for row in panels):
        raise ValueError(f"panels must be {len(row_names)} rows of {len(column_names)} pictures")
    scale = width / panels[0][0].shape[1]
    boxes = np.asarray(small_boxes, dtype=np.float64).reshape(-1, 4) * scale
    pictures, titles = [], []
    for r, (row, row_name) in enumerate(zip(panels, row_names)):
        for c, (panel, column_name) in enumerate(zip(row, column_names)):
            big = resize_rgb(panel, width=width, nearest=True)
            pictures.append(outline_boxes(big, boxes, margin=max(2, round(2 * scale))))
            note = f" ({notes[r][c]})" if notes is not None and notes[r][c] else ""
            titles.append(f"{row_name} {column_name}{note}")
    return image_grid(pictures, titles, columns=len(column_names))


def stack_groups(
    groups: Sequence[np.ndarray],
    headers: Sequence[str],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | np.ndarray,
    gap: int = 12,
) -> np.ndarray:
    """Groups one under another, each under a header line, with one legend of ``class_names`` at the bottom."""
    if len(groups) != len(headers) or not groups:
        raise ValueError(f"{len(groups)} groups but {len(headers)} headers")
    width = max(g.shape[1] for g in groups)
    parts = []
    for group, header in zip(groups, headers):
        band = Image.new("RGB", (width, 22), (255, 255, 255))
        ImageDraw.Draw(band).text((4, 3), header, fill=(0, 0, 0), font=_font(14))
        padded = np.full((group.shape[0], width, 3), 255, np.uint8)
        padded[:, : group.shape[1]] = group
        parts += [np.asarray(band), padded, np.full((gap, width, 3), 255, np.uint8)]
    figure = np.concatenate(parts[:-1], axis=0)
    return add_legend(figure, class_names, palette)
