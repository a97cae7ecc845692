"""Feature Selection Module (FSM) of FaPN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.init import c2_xavier_fill

__all__ = ["FeatureSelectionModule"]


class FeatureSelectionModule(nn.Module):
    """Channel attention with a skip, then a 1x1 projection: FaPN's replacement for FPN's lateral conv.

    ``a = sigmoid(conv1x1(global_avg_pool(x)))``, ``y = conv1x1(x + x * a)``, as in the authors' code
    (both convs without bias, no normalisation, no activation). The skip ``x + x * a`` keeps every channel
    at least at its input strength, so attention can emphasise but never switch a channel off.

    Args:
        in_channels: channels of the bottom-up feature ``C_i``.
        out_channels: channels after the projection (the pyramid width).

    Example:
        >>> fsm = FeatureSelectionModule(256, 128)
        >>> fsm(torch.randn(2, 256, 16, 32)).shape
        torch.Size([2, 128, 16, 32])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.attention = nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False)
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        c2_xavier_fill(self.attention)
        c2_xavier_fill(self.projection)

    def channel_attention(self, x: Tensor) -> Tensor:
        """The per-channel weights ``a`` in ``[0, 1]``, shape ``[N, C_in, 1, 1]``."""
        return torch.sigmoid(self.attention(F.adaptive_avg_pool2d(x, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(x + x * self.channel_attention(x))
