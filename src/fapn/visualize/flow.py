"""Pictures of FaPN's learned offsets: flow colours with a colour wheel, arrows, and feature maps."""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = [
    "mean_displacement",
    "flow_to_color",
    "color_wheel",
    "draw_arrows",
    "arrow_scale",
    "features_to_rgb",
    "heatmap",
]


def mean_displacement(offset: Tensor, mask: Tensor | None = None, offset_groups: int = 8, taps: int = 9) -> Tensor:
    """The mean sampling displacement per pixel of a deformable conv, ``[N, 2, H, W]`` as ``(dx, dy)``.

    ``offset`` is in torchvision's layout (channel ``g * 2 * taps + 2 * k + {0: dy, 1: dx}``); the mean runs
    over offset groups and kernel taps, weighted by the modulation ``mask`` when given (a tap the mask switches
    off does not move the result). Units are pixels of the feature map the conv runs on.

    Args:
        offset: ``[N, 2 * G * taps, H, W]``.
        mask: ``[N, G * taps, H, W]`` in ``[0, 1]``, or ``None`` for an unweighted mean.
        offset_groups: ``G``.
        taps: kernel taps (9 for 3x3).

    Returns:
        ``[N, 2, H, W]``: channel 0 is ``dx`` (right positive), channel 1 ``dy`` (down positive), the order
        :func:`torchvision.utils.flow_to_image` expects.

    Example:
        >>> off = torch.zeros(1, 2 * 8 * 9, 2, 2)
        >>> off[:, 0::2] = 1.0  # every dy = 1
        >>> mean_displacement(off)[0, :, 0, 0].tolist()
        [0.0, 1.0]
    """
    n, c, h, w = offset.shape
    if c != 2 * offset_groups * taps:
        raise ValueError(f"offset has {c} channels, expected 2 * {offset_groups} groups * {taps} taps")
    pairs = offset.reshape(n, offset_groups * taps, 2, h, w)  # [..., {dy, dx}, ...]
    if mask is None:
        dydx = pairs.mean(dim=1)
    else:
        weights = mask.reshape(n, offset_groups * taps, 1, h, w)
        dydx = (pairs * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-6)
    return dydx.flip(1)


def flow_to_color(flow: Tensor, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury flow colours (hue = direction, saturation = length) of one ``[2, H, W]`` ``(dx, dy)`` field.

    Args:
        flow: ``[2, H, W]`` displacements.
        max_magnitude: length drawn fully saturated; ``None`` for the field's largest length.

    Returns:
        ``[H, W, 3]`` uint8 RGB (white where the displacement is 0).
    """
    flow = flow.detach().float().cpu()
    if max_magnitude is None:
        max_magnitude = float(torch.linalg.vector_norm(flow, dim=0).max())
    scaled = flow / max(max_magnitude, 1e-6)
    scaled = scaled / torch.linalg.vector_norm(scaled, dim=0, keepdim=True).clamp_min(1.0)  # saturate at 1
    # torchvision normalises by the largest length itself; a unit vector fixes that scale to max_magnitude.
    padded = torch.cat([scaled, torch.zeros(2, flow.shape[1], 1)], dim=2)
    padded[:, 0, -1] = torch.tensor([1.0, 0.0])
    image = torchvision.utils.flow_to_image(padded)[:, :, :-1]
    return image.permute(1, 2, 0).numpy()


def color_wheel(size: int = 96) -> np.ndarray:
    """The key to :func:`flow_to_color`: a disc whose rim is ``max_magnitude``, with axes through the centre.

    Args:
        size: side in pixels.

    Returns:
        ``[size, size, 3]`` uint8 (white outside the disc).
    """
    coords = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / ((size - 1) / 2)
    dy, dx = torch.meshgrid(coords, coords, indexing="ij")
    flow = torch.stack([dx, dy])
    image = flow_to_color(flow, max_magnitude=1.0).copy()
    image[(dx**2 + dy**2).numpy() > 1.0] = 255
    image[size // 2, :] = np.minimum(image[size // 2, :], 96)
    image[:, size // 2] = np.minimum(image[:, size // 2], 96)
    return image


def _flow_in_image_pixels(flow: Tensor, height: int, width: int) -> Tensor:
    """``[2, h, w]`` feature-map displacements resized to ``[2, height, width]`` and scaled to image pixels."""
    flow = flow.detach().float().cpu()
    ratio_y, ratio_x = height / flow.shape[1], width / flow.shape[2]
    resized = torch.nn.functional.interpolate(flow[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return resized * torch.tensor([ratio_x, ratio_y]).view(2, 1, 1)


def arrow_scale(flow: Tensor, height: int, width: int, step: int = 16, longest: float = 0.8) -> float:
    """The arrow length factor that draws the largest displacement on the ``step`` grid ``longest * step``
    image pixels long: short training leaves sub-pixel offsets that true-length arrows show as dots.

    Returns:
        the factor (``1.0`` for a field that is zero everywhere).

    Example:
        >>> flow = torch.zeros(2, 4, 4)
        >>> flow[0] = 0.01  # 0.01 feature pixel = 0.08 image pixel
        >>> round(arrow_scale(flow, 32, 32, step=16), 3)
        160.0
    """
    field = _flow_in_image_pixels(flow, height, width)[:, step // 2 :: step, step // 2 :: step]
    largest = float(torch.linalg.vector_norm(field, dim=0).max()) if field.numel() else 0.0
    return longest * step / largest if largest > 1e-12 else 1.0


def draw_arrows(
    image: np.ndarray,
    flow: Tensor,
    step: int = 16,
    scale: float | None = 1.0,
    color: tuple[int, int, int] = (255, 255, 0),
    min_length: float = 0.5,
) -> np.ndarray:
    """Arrows of a displacement field on a grid over an image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB; ``flow`` is resized to it (and its vectors scaled by the size ratio,
            so a feature-map displacement is drawn in image pixels).
        flow: ``[2, h, w]`` ``(dx, dy)`` displacements in pixels of the ``h x w`` map.
        step: grid spacing in image pixels.
        scale: extra length factor for the arrows (1: true length; ``None``: :func:`arrow_scale`, the longest
            arrow 0.8 ``step`` long).
        color: arrow colour.
        min_length: arrows shorter than this (image pixels, after ``scale``) are drawn as dots.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    height, width = image.shape[:2]
    if scale is None:
        scale = arrow_scale(flow, height, width, step)
    resized = _flow_in_image_pixels(flow, height, width)
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for y in range(step // 2, height, step):
        for x in range(step // 2, width, step):
            dx = float(resized[0, y, x]) * scale
            dy = float(resized[1, y, x]) * scale
            length = math.hypot(dx, dy)
            if length < min_length:
                draw.point((x, y), fill=color)
                continue
            end = (x + dx, y + dy)
            draw.line([(x, y), end], fill=color, width=1)
            head = min(4.0, 0.4 * length)
            angle = math.atan2(dy, dx)
            for side in (-0.5, 0.5):
                draw.line(
                    [end, (end[0] - head * math.cos(angle + side), end[1] - head * math.sin(angle + side))],
                    fill=color,
                    width=1,
                )
    return np.asarray(canvas)


def features_to_rgb(*features: Tensor, standardize: bool = True) -> list[np.ndarray]:
    """Feature maps as RGB through one shared PCA: the 3 main components of all maps together.

    Sharing the projection makes the pictures comparable: the same feature vector gets the same colour in
    each (e.g. before and after alignment).

    Args:
        features: ``[C, H, W]`` maps with the same ``C``.
        standardize: scale each map's channels to zero mean and unit variance first, so a map with small
            values (e.g. after a ReLU) is not drowned by one with large values; colours then compare spatial
            structure rather than magnitudes.

    Returns:
        one ``[H, W, 3]`` uint8 image per map.
    """
    if not features:
        raise ValueError("features_to_rgb needs at least one feature map")
    channels = features[0].shape[0]
    blocks = [f.detach().float().cpu().reshape(channels, -1).T for f in features]
    if standardize:
        blocks = [(b - b.mean(0)) / b.std(0).clamp_min(1e-6) if len(b) > 1 else b for b in blocks]
    flat = torch.cat(blocks)
    mean = flat.mean(dim=0, keepdim=True)
    centred = flat - mean
    _, _, v = torch.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    basis = v[: min(3, v.shape[0])].T
    projected = centred @ basis
    if projected.shape[1] < 3:
        projected = torch.cat([projected, projected.new_zeros(len(projected), 3 - projected.shape[1])], dim=1)
    low = projected.quantile(0.01, dim=0) if len(projected) < 2**24 else projected.min(dim=0).values
    high = projected.quantile(0.99, dim=0) if len(projected) < 2**24 else projected.max(dim=0).values
    scaled = ((projected - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    images, start = [], 0
    for f in features:
        count = f.shape[-2] * f.shape[-1]
        block = scaled[start : start + count].reshape(f.shape[-2], f.shape[-1], 3)
        images.append((block * 255).round().to(torch.uint8).numpy())
        start += count
    return images


def heatmap(values: Tensor, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A ``[H, W]`` map in a dark-blue-to-yellow ramp (viridis-like), scaled to ``[low, high]``.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    values = values.detach().float().cpu()
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    t = ((values - low) / max(high - low, 1e-6)).clamp(0, 1).numpy()
    # viridis at 0, 0.25, 0.5, 0.75, 1
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)
    position = t * (len(stops) - 1)
    index = np.clip(np.floor(position).astype(int), 0, len(stops) - 2)
    frac = (position - index)[..., None]
    return np.rint(stops[index] * (1 - frac) + stops[index + 1] * frac).astype(np.uint8)
