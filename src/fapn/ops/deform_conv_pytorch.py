"""The pure-PyTorch deformable convolution: any device, any floating dtype, traceable and exportable.

One :func:`torch.nn.functional.grid_sample` call samples every offset group and kernel tap at once (the input
viewed as ``[N * G, C / G, H, W]``, the grid as ``[N * G, kh * kw * H_out, W_out, 2]``), the mask multiplies the
samples, and one matmul with the weight finishes the convolution. Autograd differentiates all of it, so the
backward needs no code of its own. Sampling with zero padding and ``align_corners=False`` on the pixel-centre
normalisation ``(2 * y + 1) / H - 1`` is exactly torchvision's bilinear rule: a sample with ``y <= -1`` or
``y >= H`` is zero, each corner outside the image counts as zero.

For float16 and bfloat16 the sampling runs in float32 (a bfloat16 coordinate is off by up to half a pixel on a
200-pixel map) and the GEMM in the input's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deform_conv2d_pytorch", "check_shapes"]


def _as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """``(v, v)`` for an int, the pair itself otherwise (``torch.nn.modules.utils._pair`` with a type)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_shapes(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int]:
    """Validates the shapes as torchvision does; returns ``(offset_groups, H_out, W_out)``."""
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected 4-d input, offset and weight, got {input.dim()}-d, {offset.dim()}-d and {weight.dim()}-d"
        )
    N, C, H, W = input.shape
    kh, kw = weight.shape[-2:]
    K = kh * kw
    H_out = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    W_out = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if offset.shape[1] % (2 * K) != 0:
        raise ValueError(f"offset channels ({offset.shape[1]}) must be a multiple of 2 * kh * kw = {2 * K}")
    G = offset.shape[1] // (2 * K)
    if G == 0 or C % G != 0:
        raise ValueError(f"input channels ({C}) must be divisible by the offset groups ({G})")
    if C % weight.shape[1] != 0 or weight.shape[0] % (C // weight.shape[1]) != 0:
        raise ValueError(
            f"weight {tuple(weight.shape)} does not fit {C} input channels: weight.shape[1] must divide C and the "
            "conv groups C / weight.shape[1] must divide C_out"
        )
    if tuple(offset.shape) != (N, 2 * G * K, H_out, W_out):
        raise ValueError(f"offset must be {(N, 2 * G * K, H_out, W_out)}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (N, G * K, H_out, W_out):
        raise ValueError(f"mask must be {(N, G * K, H_out, W_out)}, got {tuple(mask.shape)}")
    return G, H_out, W_out


def deform_conv2d_pytorch(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution in plain PyTorch ops (grid_sample + matmul).

    Args:
        input, offset, weight, bias, stride, padding, dilation, mask: as :func:`fapn.ops.deform_conv2d`.

    Returns:
        ``[N, C_out, H_out, W_out]`` in ``input``'s dtype.

    Example:
        >>> x, w = torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3)
        >>> out = deform_conv2d_pytorch(x, torch.zeros(1, 18, 5, 5), w, padding=1)
        >>> torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    stride, padding, dilation = _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    G, H_out, W_out = check_shapes(input, offset, weight, mask, stride, padding, dilation)
    N, C, H, W = input.shape
    C_out, C_per_group, kh, kw = weight.shape
    K = kh * kw
    dtype = input.dtype
    sample_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32

    # Sample positions of every (group, tap, output pixel), in input pixels: the regular grid plus the offset.
    rows = torch.arange(H_out, device=input.device, dtype=sample_dtype) * stride[0] - padding[0]
    cols = torch.arange(W_out, device=input.device, dtype=sample_dtype) * stride[1] - padding[1]
    tap_rows = (torch.arange(kh, device=input.device, dtype=sample_dtype) * dilation[0]).repeat_interleave(kw)
    tap_cols = (torch.arange(kw, device=input.device, dtype=sample_dtype) * dilation[1]).repeat(kh)
    offset = offset.to(sample_dtype).reshape(N, G, K, 2, H_out, W_out)
    y = offset[:, :, :, 0] + (tap_rows.view(K, 1, 1) + rows.view(1, H_out, 1))
    x = offset[:, :, :, 1] + (tap_cols.view(K, 1, 1) + cols.view(1, 1, W_out))
    grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], dim=-1).reshape(N * G, K * H_out, W_out, 2)

    samples = F.grid_sample(
        input.to(sample_dtype).reshape(N * G, C // G, H, W),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).reshape(N, G, C // G, K, H_out * W_out)
    if mask is not None:
        samples = samples * mask.to(sample_dtype).reshape(N, G, 1, K, H_out * W_out)
    samples = samples.to(dtype)

    conv_groups = C // C_per_group
    columns = samples.reshape(N, conv_groups, C_per_group * K, H_out * W_out)
    weight_matrix = weight.reshape(conv_groups, C_out // conv_groups, C_per_group * K)
    out = torch.matmul(weight_matrix, columns).reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out
