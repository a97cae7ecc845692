"""detectron2's category-area crop and SSD colour augmentation as transforms v2, checked against per-pixel
references written here (colorsys for HSV) and constructed cases."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fapn.data.augment import CategoryAreaCrop, ColorAugSSD, ssd_saturation


def coordinate_image(height: int, width: int) -> tv_tensors.Image:
    """Channel 0 = row, channel 1 = column: a crop tells where it came from."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return tv_tensors.Image(torch.stack([yy, xx, torch.zeros_like(yy)]).to(torch.uint8))


def test_crop_respects_the_single_category_rule() -> None:
    # class 0 everywhere except a 6x6 patch of class 1 and a band of ignore: only windows over the patch pass
    mask = torch.zeros(60, 80, dtype=torch.int64)
    mask[40:46, 60:66] = 1
    mask[:, :10] = 255
    crop = CategoryAreaCrop([20, 20], single_category_max_area=0.95, ignore_index=255)
    passed = 0
    for seed in range(40):
        torch.manual_seed(seed)
        image, out = crop(coordinate_image(60, 80), tv_tensors.Mask(mask))
        top, left = int(image[0, 0, 0]), int(image[1, 0, 0])
        torch.testing.assert_close(out, tv_tensors.Mask(mask[top : top + 20, left : left + 20]))
        labelled = out[out != 255]
        counts = torch.unique(labelled, return_counts=True)[1]
        passed += int(len(counts) > 1 and counts.max() < 0.95 * counts.sum())
    # a random 20x20 window holds the patch with probability about 0.1; ten draws find one most of the time
    assert passed >= 25


def test_crop_without_the_rule_is_a_plain_random_crop_and_pads() -> None:
    torch.manual_seed(0)
    image, mask = CategoryAreaCrop([16, 24], 1.0)(coordinate_image(30, 40), tv_tensors.Mask(torch.zeros(30, 40)))
    assert image.shape == (3, 16, 24) and mask.shape == (16, 24)
    small_image, small_mask = CategoryAreaCrop([16, 24], 0.75, ignore_index=7)(
        coordinate_image(10, 40), tv_tensors.Mask(torch.arange(400).view(10, 40) % 2)
    )
    assert small_image.shape == (3, 16, 24) and small_mask.shape == (16, 24)
    assert (small_mask[10:] == 7).all() and (small_image[:, 10:] == 0).all()
    with pytest.raises(ValueError, match="single_category_max_area"):
        CategoryAreaCrop([4, 4], 0.0)
    with pytest.raises(ValueError, match="Mask"):
        CategoryAreaCrop([4, 4], 0.5)(coordinate_image(8, 8))


def test_ssd_saturation_is_hsv_saturation_scaling() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 6, 7)).astype(np.float64)
    pixels[:, 0, 0] = 0  # black
    pixels[:, 0, 1] = 128  # grey
    for factor in (0.5, 1.3, 5.0):
        ours = ssd_saturation(torch.from_numpy(pixels), factor).numpy()
        for y in range(6):
            for x in range(7):
                h, s, v = colorsys.rgb_to_hsv(*(pixels[:, y, x] / 255))
                expected = np.array(colorsys.hsv_to_rgb(h, min(s * factor, 1.0), v)) * 255
                np.testing.assert_allclose(ours[:, y, x], expected, atol=1e-9)


def test_colour_steps_by_hand() -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (3, 5, 6)).astype(np.uint8)
    image = tv_tensors.Image(torch.from_numpy(array))
    aug = ColorAugSSD()
    bright = aug.transform(image, {"steps": [("brightness", 20.7)]})
    np.testing.assert_array_equal(bright.numpy(), np.clip(array.astype(np.float32) + 20.7, 0, 255).astype(np.uint8))
    contrast = aug.transform(image, {"steps": [("contrast", 1.4)]})
    np.testing.assert_array_equal(contrast.numpy(), np.clip(array.astype(np.float32) * 1.4, 0, 255).astype(np.uint8))
    hue = aug.transform(image, {"steps": [("hue", 18.0)]}).numpy().astype(np.float64)
    for y in range(5):
        for x in range(6):
            h, s, v = colorsys.rgb_to_hsv(*(array[:, y, x] / 255.0))
            expected = np.array(colorsys.hsv_to_rgb((h + 36 / 360) % 1.0, s, v)) * 255
            np.testing.assert_allclose(hue[:, y, x], expected, atol=1.01)  # uint8 rounding
    assert isinstance(bright, tv_tensors.Image)
    mask = tv_tensors.Mask(torch.ones(5, 6))
    assert aug.transform(mask, {"steps": [("brightness", 20.0)]}) is mask


def test_colour_draws_follow_detectron2s_probabilities() -> None:
    aug = ColorAugSSD()
    torch.manual_seed(0)
    counts = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}
    contrast_last = 0
    for _ in range(2000):
        steps = aug.make_params([])["steps"]
        for name, value in steps:
            counts[name] += 1
            if name == "brightness":
                assert -32 <= value <= 32
            elif name == "hue":
                assert value == int(value) and -18 <= value <= 18
            else:
                assert 0.5 <= value <= 1.5
        names = [n for n, _ in steps if n != "brightness"]
        contrast_last += int(len(names) == 3 and names[-1] == "contrast")
    for name, count in counts.items():
        assert 900 < count < 1100, name  # each step with probability 1/2
    assert 90 < contrast_last < 160  # all three drawn (1/8) and the saturation-first order (1/2): 1/16 of 2000


def test_in_a_pipeline_with_resize_and_flip() -> None:
    pipeline = v2.Compose(
        [
            v2.RandomShortestSize(list(range(24, 49, 8)), max_size=96),
            CategoryAreaCrop([16, 32], 0.75),
            ColorAugSSD(),
            v2.RandomHorizontalFlip(),
        ]
    )
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 30, 60), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (30, 60)))
    out_image, out_mask = pipeline(image, mask)
    assert out_image.shape == (3, 16, 32) and out_image.dtype == torch.uint8 and out_mask.shape == (16, 32)
    assert set(out_mask.unique().tolist()) <= {0, 1, 2}
