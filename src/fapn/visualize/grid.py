"""Side-by-side figures with titles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["image_grid", "titled", "resize_rgb"]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def titled(image: np.ndarray, title: str, title_height: int = 20) -> np.ndarray:
    """The image with a white band above it holding ``title``."""
    image = np.asarray(image)
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + title_height), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, title_height))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0), font=_font(max(title_height - 6, 8)))
    return np.asarray(canvas)


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    columns: int | None = None,
    padding: int = 4,
    title_height: int = 20,
) -> np.ndarray:
    """Tile RGB images row-major into one figure, each under its title; cells take the largest image's size.

    Args:
        images: ``[H_i, W_i, 3]`` uint8 images (smaller ones are centred in their cell).
        titles: one title per image, or ``None`` for no titles.
        columns: images per row (all in one row if ``None``).
        padding: white pixels between cells.
        title_height: height of the title band.

    Returns:
        ``[H, W, 3]`` uint8.

    Example:
        >>> image_grid([np.zeros((10, 20, 3), np.uint8)] * 3, columns=2, padding=2, title_height=0).shape
        (22, 42, 3)
    """
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if titles is not None and title_height > 0:
        images = [titled(img, t, title_height) for img, t in zip(images, titles)]
    columns = columns or len(images)
    rows = (len(images) + columns - 1) // columns
    cell_h = max(img.shape[0] for img in images)
    cell_w = max(img.shape[1] for img in images)
    out = np.full((rows * cell_h + (rows - 1) * padding, columns * cell_w + (columns - 1) * padding, 3), 255, np.uint8)
    for index, img in enumerate(images):
        row, col = divmod(index, columns)
        top = row * (cell_h + padding) + (cell_h - img.shape[0]) // 2
        left = col * (cell_w + padding) + (cell_w - img.shape[1]) // 2
        out[top : top + img.shape[0], left : left + img.shape[1]] = img
    return out


def resize_rgb(
    image: np.ndarray, width: int | None = None, height: int | None = None, nearest: bool = False
) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 image resized to ``width`` x ``height`` (a missing side keeps the aspect ratio).

    ``nearest`` keeps hard edges (label colours, feature-map cells); otherwise bilinear.
    """
    h, w = image.shape[:2]
    if width is None and height is None:
        return image
    if width is None:
        width = max(1, round(w * height / h))
    if height is None:
        height = max(1, round(h * width / w))
    if (height, width) == (h, w):
        return image
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), resample))
