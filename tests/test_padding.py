"""``pad_to_multiple`` / ``ceil_div``: the padding every encoder path shares, against ``math.ceil`` and a
hand-built padded tensor."""

from __future__ import annotations

import math

import torch

from fapn.layers import ceil_div, pad_to_multiple


def test_ceil_div_equals_math_ceil() -> None:
    for size in range(0, 130):
        for divisor in (1, 4, 8, 32, 224):
            assert ceil_div(size, divisor) == math.ceil(size / divisor)


def test_pad_to_multiple_pads_bottom_right_with_the_value() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    out = pad_to_multiple(x, 4, value=255)
    expected = torch.full((2, 8, 8), 255.0)
    expected[:, :5, :7] = x
    assert torch.equal(out, expected)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.equal(pad_to_multiple(labels, 4, value=255), labels)  # already a multiple: unchanged
