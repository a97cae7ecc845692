"""detectron2's semantic segmentation augmentations used by PointRend's Cityscapes recipe, as transforms v2.

* :class:`CategoryAreaCrop`: detectron2's ``RandomCrop_CategoryAreaConstraint``: a random crop, redrawn (at most
  10 draws) until no single category covers ``single_category_max_area`` (0.75) or more of the crop's labelled
  pixels and the crop holds at least two categories; the ignore label does not count.
* :class:`ColorAugSSD`: detectron2's ``ColorAugSSDTransform`` (SSD's photometric distortion): random brightness
  shift (+-32), then in random order contrast (x[0.5, 1.5]) and saturation (x[0.5, 1.5] in HSV) and hue
  (+-18 in OpenCV's 0-180 units, i.e. +-36 degrees), each applied with probability 1/2.

Both draw from torch's global generator, which the training data stream seeds per sample. Images are uint8
``tv_tensors.Image`` ``[3, H, W]`` (RGB), labels ``tv_tensors.Mask``.

Example:
    >>> from torchvision import tv_tensors
    >>> image = tv_tensors.Image(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8))
    >>> mask = tv_tensors.Mask(torch.arange(40 * 60).view(40, 60) % 3)
    >>> image, mask = CategoryAreaCrop([16, 32], single_category_max_area=0.75)(image, mask)
    >>> tuple(image.shape), tuple(mask.shape)
    ((3, 16, 32), (16, 32))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["CategoryAreaCrop", "ColorAugSSD", "ssd_saturation"]


class CategoryAreaCrop(v2.Transform):
    """A random ``[height, width]`` crop in which no category takes ``single_category_max_area`` of the labels.

    As detectron2's ``RandomCrop_CategoryAreaConstraint`` with ``crop_type="absolute"`` [pointrend]: the crop is
    ``min(size, image size)``; up to 10 windows are drawn and the first that holds at least two categories with
    none at ``single_category_max_area`` or more of the non-ignored pixels is kept, otherwise the 10th. Unlike
    detectron2 (which pads in the model) a crop smaller than ``size`` is then padded to ``size``, images with 0
    and labels with ``ignore_index``, so that a batch stacks [ours].

    Args:
        size: crop ``[height, width]``.
        single_category_max_area: largest allowed share of one category; 1.0 disables the rule.
        ignore_index: the label that does not count (and fills the padding).
        pad: pad crops smaller than ``size``.
    """

    def __init__(
        self, size: Sequence[int], single_category_max_area: float = 0.75, ignore_index: int = 255, pad: bool = True
    ) -> None:
        super().__init__()
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be [height, width] of positive ints, got {list(size)}")
        if not 0.0 < single_category_max_area <= 1.0:
            raise ValueError(f"single_category_max_area must be in (0, 1], got {single_category_max_area}")
        self.size = (int(size[0]), int(size[1]))
        self.single_category_max_area = single_category_max_area
        self.ignore_index = ignore_index
        self.pad = pad

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = min(self.size[0], height), min(self.size[1], width)
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if self.single_category_max_area < 1.0 and not masks:
            raise ValueError("CategoryAreaCrop needs the label map (a tv_tensors.Mask) among its inputs")
        for _ in range(10):
            top = int(torch.randint(height - crop_h + 1, ()))
            left = int(torch.randint(width - crop_w + 1, ()))
            if self.single_category_max_area >= 1.0:
                break
            window = masks[0][..., top : top + crop_h, left : left + crop_w]
            counts = torch.unique(window[window != self.ignore_index], return_counts=True)[1]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        padding = [0, 0, max(0, self.size[1] - crop_w), max(0, self.size[0] - crop_h)] if self.pad else [0, 0, 0, 0]
        return {"top": top, "left": left, "height": crop_h, "width": crop_w, "padding": padding}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(
            v2.functional.crop,
            inpt,
            top=params["top"],
            left=params["left"],
            height=params["height"],
            width=params["width"],
        )
        if any(params["padding"]):
            fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
            out = self._call_kernel(v2.functional.pad, out, padding=params["padding"], fill=fill)
        return out


def ssd_saturation(image: Tensor, factor: float) -> Tensor:
    """Scale the HSV saturation of a float RGB image ``[3, H, W]`` in 0..255 by ``factor`` (clipped at 1), hue
    and value unchanged. With ``V = max(r, g, b)``, ``S = 1 - min / V``, every channel lies on ``V - (V - c)``
    scaled by ``S' / S``, so no HSV round trip is needed."""
    value = image.amax(dim=0, keepdim=True)
    lowest = image.amin(dim=0, keepdim=True)
    saturation = torch.where(value > 0, 1.0 - lowest / value.clamp(min=1e-12), torch.zeros_like(value))
    new = (saturation * factor).clamp(max=1.0)
    ratio = torch.where(saturation > 0, new / saturation.clamp(min=1e-12), torch.zeros_like(saturation))
    return value - (value - image) * ratio


class ColorAugSSD(v2.Transform):
    """SSD's photometric distortion as detectron2's ``ColorAugSSDTransform`` [pointrend]; labels pass through.

    Steps, each with probability 1/2: brightness ``+ U(-32, 32)``; then either contrast, saturation, hue or
    saturation, hue, contrast (chosen with probability 1/2): contrast ``x U(0.5, 1.5)``, saturation
    ``x U(0.5, 1.5)`` in HSV, hue ``+ randint(-18, 18)`` OpenCV units (2 degrees each). Values are clipped to
    0..255 and truncated to uint8 after each step, as detectron2's ``convert``. Saturation and hue work in float
    HSV (``ssd_saturation``, torchvision's ``adjust_hue``) where detectron2 goes through OpenCV's 8-bit HSV [ours].

    Args:
        brightness_delta: largest brightness shift (32).
        contrast_range, saturation_range: factor ranges ((0.5, 1.5)).
        hue_delta: largest hue shift in OpenCV units (18).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _coin() -> bool:
        return bool(torch.randint(2, ()))

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(()))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        steps: list[tuple[str, float]] = []
        if self._coin():
            steps.append(("brightness", self._uniform(-self.brightness_delta, self.brightness_delta)))
        contrast_first = self._coin()
        draws = {}
        for name in ("contrast", "saturation", "hue") if contrast_first else ("saturation", "hue", "contrast"):
            if self._coin():
                if name == "contrast":
                    draws[name] = self._uniform(*self.contrast_range)
                elif name == "saturation":
                    draws[name] = self._uniform(*self.saturation_range)
                else:
                    draws[name] = float(torch.randint(-self.hue_delta, self.hue_delta + 1, ()))
                steps.append((name, draws[name]))
        return {"steps": steps}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if inpt.dtype != torch.uint8:
            raise ValueError(f"ColorAugSSD expects uint8 images (0..255), got {inpt.dtype}")
        image = inpt.as_subclass(Tensor)
        for name, value in params["steps"]:
            if name == "hue":
                image = v2.functional.adjust_hue(image, value * 2.0 / 360.0)
                continue
            x = image.float()
            if name == "brightness":
                x = x + value
            elif name == "contrast":
                x = x * value
            else:
                x = ssd_saturation(x, value)
            image = x.clamp(0, 255).to(torch.uint8)  # truncation, as numpy's astype(uint8)
        return tv_tensors.wrap(image, like=inpt)
