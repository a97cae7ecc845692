"""Training / evaluation transforms: scale set, flip and crop applied identically to image and mask, padding
with the ignore label, normalisation."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from fapn.data.transforms import PAPER_SCALES, RandomScale, eval_transforms, train_transforms


def coded_pair(height: int = 20, width: int = 30) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """An image whose red channel equals the mask (x coordinate mod 10), so misalignment is detectable."""
    label = (torch.arange(width) // 3).expand(height, width).clone()
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0] = label.to(torch.uint8) * 20
    return tv_tensors.Image(image), tv_tensors.Mask(label)


def test_random_scale_draws_from_the_paper_set() -> None:
    image, mask = coded_pair(20, 40)
    seen = set()
    t = RandomScale(PAPER_SCALES)
    for _ in range(60):
        out_image, out_mask = t(image, mask)
        assert out_image.shape[-2:] == out_mask.shape[-2:]
        seen.add(out_image.shape[-1] / 40)
    assert seen == set(PAPER_SCALES)


def test_mask_is_resized_with_nearest_keeping_label_values() -> None:
    image, mask = coded_pair()
    _, out_mask = RandomScale([1.75])(image, mask)
    assert out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())


def test_train_transforms_keep_image_and_mask_aligned() -> None:
    torch.manual_seed(0)
    transform = train_transforms([16, 24], ignore_index=255, scales=[1.0], hflip=True, mean=[0, 0, 0], std=[1, 1, 1])
    flips = 0
    for _ in range(20):
        image, mask = coded_pair()
        out_image, out_mask = transform(image, mask)
        assert out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
        assert tuple(out_image.shape) == (3, 16, 24) and tuple(out_mask.shape) == (16, 24)
        torch.testing.assert_close(out_image[0], out_mask.float() * 20 / 255)
        flips += bool(out_mask[0, 0] > out_mask[0, -1])
    assert 3 <= flips <= 17  # both orientations occur


def test_crop_larger_than_image_pads_mask_with_ignore() -> None:
    image, mask = coded_pair(10, 12)
    _out_image, out_mask = train_transforms([32, 40], ignore_index=11, scales=[1.0], hflip=False)(image, mask)
    assert tuple(out_mask.shape) == (32, 40)
    assert (out_mask == 11).sum() == 32 * 40 - 10 * 12
    kept = out_mask != 11
    assert kept.sum() == 120


def test_eval_transforms_keep_full_size_and_normalise() -> None:
    image, mask = coded_pair(21, 33)
    out_image, out_mask = eval_transforms(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])(image, mask)
    assert tuple(out_image.shape) == (3, 21, 33)
    torch.testing.assert_close(out_image, (image.float() / 255 - 0.5) / 0.25)
    assert torch.equal(out_mask, mask)
