"""Class legends (a colour swatch and a name per class) for every picture that shows labels, and the labelled
comparison figure that ``fapn compare`` and ``fapn demo`` draw.

Example:
    >>> import numpy as np
    >>> strip = legend(["road", "car", "pole"], [[128, 64, 128], [0, 0, 142], [153, 153, 153]], width=200)
    >>> strip.shape[1], strip.dtype
    (200, dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from fapn.visualize.grid import _font, image_grid, resize_rgb
from fapn.visualize.palette import as_palette

__all__ = ["legend", "add_legend", "present_classes", "labelled_figure"]


def present_classes(*labels: np.ndarray, num_classes: int | None = None, ignore_index: int | None = 255) -> list[int]:
    """Sorted class indices that occur in any of the label maps (ignored and out-of-range values left out).

    Example:
        >>> present_classes(np.array([[0, 3], [255, 3]]), np.array([[1]]), num_classes=3)
        [0, 1]
    """
    found: set[int] = set()
    for label in labels:
        values = np.unique(np.asarray(label))
        found.update(
            int(v) for v in values if v >= 0 and v != ignore_index and (num_classes is None or v < num_classes)
        )
    return sorted(found)


def legend(
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | np.ndarray | None,
    classes: Sequence[int] | None = None,
    width: int = 480,
    swatch: int = 12,
    padding: int = 4,
) -> np.ndarray:
    """A white strip with a colour swatch and the name of each class, laid out left to right in rows that fit
    ``width``.

    Args:
        class_names: a name per class.
        palette: an ``[r, g, b]`` per class (padded with :func:`~fapn.visualize.default_palette` colours).
        classes: which classes to list, in order (default: all).
        width: strip width in pixels (a name wider than it is cut).
        swatch: side of the colour square.
        padding: space around entries.

    Returns:
        ``[H, width, 3]`` uint8; ``H`` grows with the rows needed (one row of ``swatch + 2 * padding`` when
        nothing is listed).
    """
    colors = as_palette(palette, len(class_names))
    classes = list(range(len(class_names))) if classes is None else [int(c) for c in classes]
    font = _font(swatch)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_height = swatch + 2 * padding
    entries: list[tuple[int, int, int]] = []  # (class, x, row)
    x, row = padding, 0
    for index in classes:
        name = class_names[index] if 0 <= index < len(class_names) else f"class {index}"
        entry_width = swatch + padding + int(np.ceil(measure.textlength(name, font=font))) + 3 * padding
        if x > padding and x + entry_width > width:
            x, row = padding, row + 1
        entries.append((index, x, row))
        x += entry_width
    rows = row + 1
    canvas = Image.new("RGB", (width, rows * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, left, row in entries:
        top = row * row_height + padding
        color = tuple(int(v) for v in colors[index]) if index < len(colors) else (0, 0, 0)
        draw.rectangle([left, top, left + swatch - 1, top + swatch - 1], fill=color)
        name = class_names[index] if 0 <= index < len(class_names) else f"class {index}"
        draw.text((left + swatch + padding, top - 1), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def add_legend(
    image: np.ndarray,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | np.ndarray | None,
    classes: Sequence[int] | None = None,
    gap: int = 4,
) -> np.ndarray:
    """``image`` with a :func:`legend` of ``classes`` as wide as the image below it (a white gap between)."""
    strip = legend(class_names, palette, classes, width=image.shape[1])
    spacer = np.full((gap, image.shape[1], 3), 255, np.uint8)
    return np.concatenate([np.asarray(image), spacer, strip], axis=0)


def labelled_figure(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | np.ndarray | None,
    labels: Sequence[np.ndarray] = (),
    ignore_index: int | None = 255,
    columns: int | None = None,
    scale: int = 1,
) -> np.ndarray:
    """Panels side by side under their titles, with a legend of the classes that occur in ``labels`` below:
    the comparison figure of ``fapn compare`` and ``fapn demo`` (image | ground truth | each model).

    Args:
        panels: ``[H, W, 3]`` uint8 pictures (the image, colour masks or overlays).
        titles: one per panel.
        class_names: a name per class.
        palette: the colours the label panels were drawn in.
        labels: the label maps shown (ground truth, predictions); their classes make the legend.
        ignore_index: label left out of the legend.
        columns: panels per row (default: one row).
        scale: enlarge every panel by this integer factor (nearest neighbour, keeps label edges hard).

    Returns:
        ``[H, W, 3]`` uint8.
    """
    if scale != 1:
        panels = [resize_rgb(p, width=p.shape[1] * scale, height=p.shape[0] * scale, nearest=True) for p in panels]
    figure = image_grid(list(panels), list(titles), columns=columns)
    classes = present_classes(*labels, num_classes=len(class_names), ignore_index=ignore_index)
    return add_legend(figure, class_names, palette, classes)
