"""Uploaded bytes as images and label maps, with a one-line reason for everything that cannot be read.

Nothing here touches the file system: an upload arrives as bytes and leaves as an array. Whatever the bytes
hold (not an image, a truncated file, a huge image, grey, RGBA, 16-bit, a colour mask given as ground truth),
the result is either an array with notes on what was changed, or an :class:`UploadError` that says what is wrong.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("L", (48, 40), 128).save(buffer, format="PNG")
    >>> image, notes, original_size = read_image(buffer.getvalue())
    >>> image.shape, notes
    ((40, 48, 3), ['grey image: its one channel used as R, G and B'])
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps

__all__ = ["UploadError", "read_image", "read_label", "MIN_SIDE", "MAX_PIXELS"]

MIN_SIDE = 32
"""The smallest image side the models take (five stride-2 stages)."""

MAX_PIXELS = 90_000_000
"""The largest image read at all, in pixels (about Pillow's decompression-bomb limit); larger ones are refused
before they are decoded. Images below it but with a side above ``max_side`` are downscaled."""


class UploadError(ValueError):
    """An upload that cannot be used; the message is one line meant for the page."""


def _open(data: bytes | None, what: str) -> Image.Image:
    if not data:
        raise UploadError(f"the {what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise UploadError(f"the {what} is too large to read: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(
            f"the {what} is not an image Pillow can read (PNG, JPEG, BMP, TIFF, WebP, ...): {err}"
        ) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UploadError(
            f"the {what} is {width}x{height} = {width * height / 1e6:.0f} megapixels; the app reads images up to "
            f"{MAX_PIXELS / 1e6:.0f} megapixels"
        )
    return image


def _load(image: Image.Image, what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(f"the {what} is truncated or damaged and cannot be decoded: {err}") from None


def _to_uint8_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode as ``[H, W, 3]`` uint8, noting what was changed."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            values = (values - low) / max(high - low, 1e-12) * 255.0
            notes.append(f"floating-point image: values {low:.3g}..{high:.3g} stretched to 0..255")
        elif mode.startswith("I;16") or float(values.max(initial=0)) > 255:
            top = 65535.0 if float(values.max(initial=0)) <= 65535 else float(values.max())
            values = values / top * 255.0
            notes.append(f"16-bit image: values scaled from 0..{top:.0f} to 0..255")
        grey = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        notes.append("grey image: its one channel used as R, G and B")
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        if int(np.asarray(rgba)[..., 3].min()) < 255:
            notes.append("transparent pixels drawn over white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    elif mode in ("L", "1"):
        notes.append("grey image: its one channel used as R, G and B")
    elif mode not in ("RGB", "P"):
        notes.append(f"{mode} image converted to RGB")
    return np.asarray(image.convert("RGB"))


def read_image(data: bytes | None, max_side: int = 1024) -> tuple[np.ndarray, list[str], tuple[int, int]]:
    """An uploaded image as ``[H, W, 3]`` uint8 RGB, its longer side at most ``max_side``.

    The EXIF orientation is applied (photos come out upright); grey, 16-bit, floating-point, palette and
    transparent images are converted; a larger image is downscaled (JPEGs decode at a reduced size first).

    Args:
        data: the file's bytes.
        max_side: the longest side kept.

    Returns:
        ``(image, notes, original_size)``: ``notes`` says, one line each, what was changed (empty when nothing
        was); ``original_size`` is the upright upload's ``(height, width)`` before any downscaling.

    Raises:
        UploadError: empty, not an image, truncated, over :data:`MAX_PIXELS`, or a side under :data:`MIN_SIDE`.
    """
    image = _open(data, "image")
    notes: list[str] = []
    width, height = image.size
    try:  # EXIF orientations 5-8 turn the picture by 90 degrees
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        turned = False
    if turned:
        width, height = height, width
    scale = min(1.0, max_side / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0 and image.format == "JPEG":  # decode at the smallest power-of-two reduction that is large enough
        image.draft("RGB", (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
    _load(image, "image")
    try:
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):  # a broken EXIF block: keep the pixels as stored
        notes.append("its EXIF orientation could not be read and was not applied")
        if turned:
            width, height, target = height, width, (target[1], target[0])
    frames = int(getattr(image, "n_frames", 1))
    if frames > 1:
        notes.append(f"the first of its {frames} frames used")
    rgb = _to_uint8_rgb(image, notes)
    if scale < 1.0:
        if (rgb.shape[1], rgb.shape[0]) != target:
            rgb = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.LANCZOS))
        notes.append(
            f"downscaled from {width}x{height} to {target[0]}x{target[1]} "
            f"(this app caps the longer side at {max_side} px)"
        )
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise UploadError(
            f"the image is {rgb.shape[1]}x{rgb.shape[0]} px; the models need at least {MIN_SIDE} px on each side"
        )
    return np.ascontiguousarray(rgb), notes, (height, width)


def read_label(
    data: bytes | None, size: tuple[int, int], original_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """An uploaded ground truth as an ``[H, W]`` int64 map of class indices at the image's ``size``.

    Args:
        data: the file's bytes: a one-channel PNG (mode ``L``, ``P``, ``I;16`` or ``I``) holding class indices;
            an RGB file whose three channels are equal is read as one channel.
        size: ``(height, width)`` of the image the models ran on.
        original_size: ``(height, width)`` of the image as uploaded, when it was downscaled: a ground truth of
            that size is downscaled to ``size`` by nearest neighbour.

    Returns:
        ``(label, notes)``.

    Raises:
        UploadError: not an image, truncated, a colour picture, or a size that is neither.
    """
    image = _open(data, "ground truth")
    _load(image, "ground truth")
    notes: list[str] = []
    if image.mode in ("L", "P", "I", "1") or image.mode.startswith("I;16"):
        label = np.asarray(image).astype(np.int64)
    else:
        values = np.asarray(image.convert("RGB"))
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2])):
            raise UploadError(
                f"the ground truth is a colour picture (mode {image.mode}); it must be a label map: one channel "
                "of class indices, such as the label PNGs that fapn predict writes"
            )
        label = values[..., 0].astype(np.int64)
    if label.shape != tuple(size):
        if original_size is not None and label.shape == tuple(original_size):
            resized = Image.fromarray(label.astype(np.int32)).resize((size[1], size[0]), Image.Resampling.NEAREST)
            label = np.asarray(resized).astype(np.int64)
            notes.append(f"ground truth downscaled with the image to {size[1]}x{size[0]} (nearest label)")
        else:
            expected = f"{size[1]}x{size[0]}"
            if original_size is not None and tuple(original_size) != tuple(size):
                expected = f"{original_size[1]}x{original_size[0]} (or {expected})"
            raise UploadError(
                f"the ground truth is {label.shape[1]}x{label.shape[0]} px but the image is {expected}: "
                "it must be the label map of this image"
            )
    return label, notes
