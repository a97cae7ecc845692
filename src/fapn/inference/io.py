"""Reading images and expanding the command line's inputs (files, folders, globs)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from fapn.data.base import image_to_rgb

__all__ = ["IMAGE_EXTENSIONS", "collect_images", "load_image", "save_label_png", "save_rgb_png"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[Path]:
    """Image files named by ``inputs``: files as given, folders' image files (sorted), globs expanded.

    Args:
        inputs: paths, folders or glob patterns (``"data/*.png"``, ``"data/**/*.jpg"``).
        recursive: look into sub-folders of folders.

    Returns:
        the files in order, without duplicates.

    Raises:
        FileNotFoundError: an input that names nothing, or no image at all.
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"folder {path} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            files = sorted(
                Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise FileNotFoundError(f"pattern {text!r} matches no image")
            found.extend(files)
        else:
            raise FileNotFoundError(f"input not found: {text} (expected an image file, a folder or a glob)")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise FileNotFoundError("no input images given")
    return unique


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB: any bit depth and mode, converted by
    :func:`fapn.data.base.image_to_rgb` (16-bit scaled to 8 bits; grey, palette and RGBA converted).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that cannot be decoded as an image (truncated, not an image) or converted to RGB
            (floating point), naming it.
    """
    try:
        with Image.open(path) as image:
            return image_to_rgb(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from None


def save_label_png(label: np.ndarray, path: str | os.PathLike[str]) -> None:
    """A label map as a PNG holding the class indices (8-bit when they fit, else 16-bit)."""
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 65535:
        raise ValueError("label values must lie in [0, 65535] to be saved as PNG")
    dtype = np.uint8 if label.max(initial=0) <= 255 else np.uint16
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(dtype)).save(path)


def save_rgb_png(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """An ``[H, W, 3]`` uint8 image as PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, optimize=True)
