"""PointRend's coarse mask head: RoI features -> a low-resolution mask per class, with fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.init import c2_xavier_fill

__all__ = ["CoarseMaskHead"]


class CoarseMaskHead(nn.Module):
    """detectron2's PointRend ``ConvFCHead`` [pointrend]: (1x1 conv + ReLU when the input is wider than
    ``conv_dim``), conv 2x2 stride 2 + ReLU, FC layers + ReLU, a linear layer to ``classes x side x side``.

    With the paper's values (14x14 RoI features of P2, 256 channels, two FC of 1024, 7x7 output) it maps
    ``[R, 256, 14, 14]`` to ``[R, K, 7, 7]``. Names (``reduce_channel_dim_conv``, ``reduce_spatial_dim_conv``,
    ``fc1``, ``fc2``, ``prediction``) are detectron2's current layout.

    Init [pointrend]: convs ``c2_msra_fill``, FCs ``c2_xavier_fill``, prediction ``normal(std=0.001)``, zero bias.

    Args:
        in_channels: RoI feature channels.
        num_classes: mask classes (foreground only).
        input_size: side of the RoI features (14).
        conv_dim: channels after the convs (256).
        fc_dims: widths of the FC layers ((1024, 1024)).
        output_size: side of the coarse mask (7).

    Example:
        >>> head = CoarseMaskHead(8, 3, input_size=6, conv_dim=8, fc_dims=(16,), output_size=4)
        >>> head(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: int = 14,
        conv_dim: int = 256,
        fc_dims: Sequence[int] = (1024, 1024),
        output_size: int = 7,
    ) -> None:
        super().__init__()
        if not fc_dims:
            raise ValueError("fc_dims must name at least one FC layer")
        self.num_classes = num_classes
        self.input_size = input_size
        self.output_size = output_size
        self.reduce_channel_dim_conv: nn.Conv2d | None = None
        if in_channels > conv_dim:
            self.reduce_channel_dim_conv = nn.Conv2d(in_channels, conv_dim, kernel_size=1)
        else:
            conv_dim = in_channels
        self.reduce_spatial_dim_conv = nn.Conv2d(conv_dim, conv_dim, kernel_size=2, stride=2)
        for conv in (self.reduce_channel_dim_conv, self.reduce_spatial_dim_conv):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                assert conv.bias is not None  # built with bias=True
                nn.init.zeros_(conv.bias)
        width = conv_dim * (input_size // 2) ** 2
        self.num_fc = len(fc_dims)
        for k, fc_dim in enumerate(fc_dims, start=1):
            fc = nn.Linear(width, fc_dim)
            c2_xavier_fill(fc)  # type: ignore[arg-type]
            self.add_module(f"fc{k}", fc)
            width = fc_dim
        self.prediction = nn.Linear(width, num_classes * output_size * output_size)
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.zeros_(self.prediction.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[R, in_channels, input_size, input_size]`` -> ``[R, num_classes, output_size, output_size]``."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} RoI features, got {tuple(x.shape[-2:])}")
        if self.reduce_channel_dim_conv is not None:
            x = F.relu(self.reduce_channel_dim_conv(x))
        x = torch.flatten(F.relu(self.reduce_spatial_dim_conv(x)), start_dim=1)
        for k in range(1, self.num_fc + 1):
            x = F.relu(getattr(self, f"fc{k}")(x))
        return self.prediction(x).view(-1, self.num_classes, self.output_size, self.output_size)
