"""A modulated deformable convolution layer (DCNv2) holding its weight and bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from fapn.ops import check_backend, deform_conv2d

__all__ = ["ModulatedDeformConv2d"]


class ModulatedDeformConv2d(nn.Module):
    """DCNv2: a convolution sampling its input at learned offsets, each sample scaled by a learned mask.

    The offsets and masks are inputs, computed elsewhere (in FaPN by the FAM's offset/mask conv), in
    torchvision's layout (see :mod:`fapn.ops.deform_conv`). ``offset_groups`` is the number of offset groups
    (the authors' ``deformable_groups``), not conv groups.

    Initialisation as the authors' DCNv2 module: weight ``uniform(+-1/sqrt(C_in * kh * kw))``, bias 0.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size.
        stride: stride.
        padding: zero padding.
        dilation: dilation.
        offset_groups: offset groups; ``in_channels`` must be divisible by it.
        bias: add a learned bias.
        backend: deformable-conv backend (a key of :data:`fapn.ops.BACKENDS`) passed to every call, ``None`` to
            leave the choice to :func:`fapn.ops.resolve_backend`; a ``fapn.ops.deform_backend`` block overrides it.

    Example:
        >>> dcn = ModulatedDeformConv2d(16, 16, 3, padding=1, offset_groups=8)
        >>> x = torch.randn(1, 16, 8, 8)
        >>> offset, mask = torch.zeros(1, 2 * 8 * 9, 8, 8), torch.ones(1, 8 * 9, 8, 8)
        >>> dcn(x, offset, mask).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        offset_groups: int = 1,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if in_channels % offset_groups != 0:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by offset_groups ({offset_groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.offset_groups = offset_groups
        self.backend = None if backend is None else check_backend(backend)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def taps(self) -> int:
        """Kernel taps, ``kh * kw``."""
        return self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.taps)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, offset_groups={self.offset_groups}, "
            f"bias={self.bias is not None}"
        )
