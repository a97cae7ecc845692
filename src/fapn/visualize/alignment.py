"""The pictures of one Feature Alignment Module on one image: its offsets in flow colours with the colour wheel,
as arrows over the image, its modulation mask and, optionally, the features before and after alignment.

``fapn explain`` writes them to files and ``fapn app`` shows them on its page; both draw them here.

Example:
    >>> import numpy as np, torch
    >>> pictures = alignment_pictures(np.zeros((32, 48, 3), np.uint8), torch.ones(2, 4, 6), torch.rand(72, 4, 6))
    >>> pictures.offsets.shape, pictures.arrows.shape, pictures.mask.shape
    ((32, 48, 3), (32, 48, 3), (32, 48, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fapn.visualize.flow import arrow_scale, color_wheel, draw_arrows, features_to_rgb, flow_to_color, heatmap
from fapn.visualize.grid import resize_rgb

__all__ = ["AlignmentPictures", "alignment_pictures"]


@dataclass
class AlignmentPictures:
    """What :func:`alignment_pictures` draws, each ``[H, W, 3]`` uint8 at the size of the image it was given.

    Attributes:
        offsets: the displacement in flow colours (hue = direction, saturation = length up to ``max_length``),
            with the colour wheel in the bottom-right corner.
        arrows: the displacement as arrows on a grid over the image.
        mask: the mean modulation mask over groups and taps (dark blue = low, yellow = high).
        features: ``lateral``, ``before`` and ``after`` alignment in shared PCA colours, when features were given.
        max_length: the longest displacement, in feature pixels (the colour wheel's rim).
        arrow_scale: the arrows' length factor (1 = true length).
        mask_range: the mean mask's ``(min, max)``.
    """

    offsets: np.ndarray
    arrows: np.ndarray
    mask: np.ndarray
    max_length: float
    arrow_scale: float
    mask_range: tuple[float, float]
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def titles(self, stride: float) -> dict[str, str]:
        """Titles of the offsets, arrows and mask pictures of a FAM at ``stride`` (the rim in input pixels).

        Example:
            >>> AlignmentPictures(*[np.zeros((1, 1, 3), np.uint8)] * 3, 0.25, 1.0, (0.4, 0.6)).titles(8)["mask"]
            's8 mask 0.40..0.60'
        """
        scale_note = "true length" if self.arrow_scale == 1 else f"x{self.arrow_scale:.3g}"
        low, high = self.mask_range
        return {
            "offsets": f"stride {stride:g}: offsets (rim {self.max_length * stride:.2g} px)",
            "arrows": f"stride {stride:g}: arrows ({scale_note})",
            "mask": f"s{stride:g} mask {low:.2f}..{high:.2f}",
        }


def alignment_pictures(
    image: np.ndarray,
    displacement: Tensor,
    mask: Tensor,
    *,
    features: tuple[Tensor, Tensor, Tensor] | None = None,
    step: int = 16,
    scale: float | None = None,
) -> AlignmentPictures:
    """Draw one FAM's offsets, mask and (optionally) features at the size of ``image``.

    Args:
        image: ``[H, W, 3]`` uint8, the picture the arrows are drawn on (the input image at display size).
        displacement: ``[2, h, w]`` ``(dx, dy)`` mean displacement in feature pixels
            (:func:`~fapn.visualize.mean_displacement`).
        mask: ``[G * taps, h, w]`` modulation mask (averaged over its first dimension) or ``[h, w]``.
        features: ``(selected, upsampled, aligned)`` ``[C, h, w]`` maps, drawn with one shared PCA.
        step: arrow grid spacing in picture pixels.
        scale: arrow length factor (``None``: :func:`~fapn.visualize.arrow_scale`, the longest arrow 0.8 ``step``).

    Returns:
        the pictures and the numbers their titles need.
    """
    height, width = image.shape[:2]
    max_length = float(torch.linalg.vector_norm(displacement.detach().float(), dim=0).max())
    offsets = resize_rgb(flow_to_color(displacement, max_length), width, height, nearest=True).copy()
    wheel = color_wheel(max(8, min(72, height // 3)))
    if wheel.shape[0] + 8 <= height and wheel.shape[1] + 8 <= width:
        offsets[-wheel.shape[0] - 4 : -4, -wheel.shape[1] - 4 : -4] = wheel
    scale = scale or arrow_scale(displacement, height, width, step)
    arrows = draw_arrows(image, displacement, step=step, scale=scale)
    mean_mask = mask.mean(0) if mask.dim() == 3 else mask
    mask_picture = resize_rgb(heatmap(mean_mask), width, height, nearest=True)
    pictures = AlignmentPictures(
        offsets=offsets,
        arrows=arrows,
        mask=mask_picture,
        max_length=max_length,
        arrow_scale=scale,
        mask_range=(float(mean_mask.min()), float(mean_mask.max())),
    )
    if features is not None:
        drawn = features_to_rgb(*features)
        pictures.features = {
            name: resize_rgb(picture, width, height, nearest=True)
            for name, picture in zip(("lateral", "before", "after"), drawn)
        }
    return pictures
