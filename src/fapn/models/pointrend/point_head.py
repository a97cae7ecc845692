"""PointRend's standard point head: a per-point MLP on fine-grained features and the coarse prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StandardPointHead"]


class StandardPointHead(nn.Module):
    """detectron2's ``StandardPointHead`` [pointrend]: ``num_fc`` x (1x1 conv1d + ReLU), then a 1x1 conv1d.

    The first layer sees ``cat[fine-grained features, coarse prediction]`` at each point; with
    ``coarse_pred_each_layer`` the coarse prediction is concatenated again after every hidden layer (instance
    segmentation: ``True``; semantic segmentation: ``False``). Layer names ``fc1..fc{num_fc}``, ``predictor``
    are detectron2's, so the authors' weights map one to one.

    Init [pointrend]: hidden layers ``kaiming_normal_(fan_out, relu)`` with zero bias (``c2_msra_fill``),
    predictor ``normal(std=0.001)`` with zero bias.

    Args:
        in_channels: fine-grained feature channels (256 for P2).
        num_classes: channels of the coarse prediction and of the output.
        fc_dim: hidden width (256).
        num_fc: hidden layers (3).
        coarse_pred_each_layer: concatenate the coarse prediction to every hidden layer's input.

    Example:
        >>> head = StandardPointHead(8, 3, fc_dim=16)
        >>> head(torch.randn(2, 8, 5), torch.randn(2, 3, 5)).shape
        torch.Size([2, 3, 5])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_fc < 1:
            raise ValueError(f"num_fc must be at least 1, got {num_fc}")
        self.num_classes = num_classes
        self.num_fc = num_fc
        self.coarse_pred_each_layer = coarse_pred_each_layer
        width = in_channels + num_classes
        for k in range(1, num_fc + 1):
            fc = nn.Conv1d(width, fc_dim, kernel_size=1)
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            assert fc.bias is not None  # built with bias=True
            nn.init.zeros_(fc.bias)
            self.add_module(f"fc{k}", fc)
            width = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(width, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        assert self.predictor.bias is not None  # built with bias=True
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine_grained: Tensor, coarse: Tensor) -> Tensor:
        """Args:
            fine_grained: ``[R, in_channels, P]``.
            coarse: ``[R, num_classes, P]`` coarse logits at the same points.

        Returns:
            ``[R, num_classes, P]`` point logits.
        """
        if coarse.shape[1] != self.num_classes:
            raise ValueError(f"coarse prediction has {coarse.shape[1]} channels, expected {self.num_classes}")
        x = torch.cat([fine_grained, coarse], dim=1)
        for k in range(1, self.num_fc + 1):
            x = F.relu(getattr(self, f"fc{k}")(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.predictor(x)
