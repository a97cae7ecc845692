"""Training and evaluation transforms on ``torchvision.transforms.v2`` (masks as ``tv_tensors.Mask``).

Training: random scale from a set (the paper's {0.75, ..., 2.0}), random horizontal flip, random crop padded
with the ignore label, float conversion and normalisation. Evaluation: whole image at full size, normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fapn.data.base import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["RandomScale", "train_transforms", "eval_transforms", "PAPER_SCALES"]

PAPER_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scales`` (bilinear for images, nearest for masks).

    Args:
        scales: candidate factors.

    Example:
        >>> image = tv_tensors.Image(torch.zeros(3, 10, 20, dtype=torch.uint8))
        >>> out = RandomScale([2.0])(image)
        >>> tuple(out.shape)
        (3, 20, 40)
    """

    def __init__(self, scales: Sequence[float]) -> None:
        super().__init__()
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be a non-empty list of positive factors, got {list(scales)}")
        self.scales = [float(s) for s in scales]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=True)


def _to_float_normalized(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def train_transforms(
    crop_size: Sequence[int],
    ignore_index: int,
    scales: Sequence[float] = PAPER_SCALES,
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    short_edges: Sequence[int] = (),
    max_size: int | None = None,
    single_category_max_area: float = 1.0,
    color_aug_ssd: bool = False,
) -> v2.Compose:
    """Random scale, flip, crop ``crop_size`` (``[height, width]``, padding images with 0 and masks with
    ``ignore_index``), normalisation.

    With any of the last four arguments, detectron2's semantic segmentation pipeline instead (PointRend's
    Cityscapes recipe): resize the shorter side to one of ``short_edges`` (longer side at most ``max_size``;
    ``RandomShortestSize``) or by ``scales``, :class:`~fapn.data.augment.CategoryAreaCrop` (no category on
    ``single_category_max_area`` of the crop or more), :class:`~fapn.data.augment.ColorAugSSD` if
    ``color_aug_ssd``, flip, normalisation.

    Example:
        >>> t = train_transforms([32, 48], ignore_index=255, scales=[1.0])
        >>> image = tv_tensors.Image(torch.zeros(3, 20, 20, dtype=torch.uint8))
        >>> mask = tv_tensors.Mask(torch.zeros(20, 20, dtype=torch.int64))
        >>> image, mask = t(image, mask)
        >>> tuple(image.shape), int(mask.max())
        ((3, 32, 48), 255)
    """
    if len(crop_size) != 2:
        raise ValueError(f"crop_size must be [height, width], got {list(crop_size)}")
    if short_edges or max_size is not None or single_category_max_area < 1.0 or color_aug_ssd:
        return _detectron2_train_transforms(
            crop_size,
            ignore_index,
            scales,
            hflip,
            mean,
            std,
            short_edges,
            max_size,
            single_category_max_area,
            color_aug_ssd,
        )
    steps: list[v2.Transform] = []
    if list(scales) != [1.0]:
        steps.append(RandomScale(scales))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps.append(
        v2.RandomCrop(
            [int(crop_size[0]), int(crop_size[1])],
            pad_if_needed=True,
            fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
        )
    )
    steps += _to_float_normalized(mean, std)
    return v2.Compose(steps)


def _detectron2_train_transforms(
    crop_size: Sequence[int],
    ignore_index: int,
    scales: Sequence[float],
    hflip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    short_edges: Sequence[int],
    max_size: int | None,
    single_category_max_area: float,
    color_aug_ssd: bool,
) -> v2.Compose:
    from fapn.data.augment import CategoryAreaCrop, ColorAugSSD

    steps: list[v2.Transform] = []
    if short_edges:
        steps.append(v2.RandomShortestSize(list(short_edges), max_size=max_size))
    elif list(scales) != [1.0]:
        steps.append(RandomScale(scales))
    steps.append(CategoryAreaCrop(crop_size, single_category_max_area, ignore_index))
    if color_aug_ssd:
        steps.append(ColorAugSSD())
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += _to_float_normalized(mean, std)
    return v2.Compose(steps)


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Whole image, full size: only float conversion and normalisation."""
    return v2.Compose(_to_float_normalized(mean, std))
