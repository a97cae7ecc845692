"""FPN's top-down merge (lateral + upsampled coarse feature), the FAM-off branch of the ablation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fapn.layers.conv_norm import Norm
from fapn.layers.pyramid_ops import (
    Fusion,
    UpsampleMode,
    check_merge_options,
    make_concat_fuse,
    make_lateral,
    upsample_to,
)

__all__ = ["FPNMerge"]


class FPNMerge(nn.Module):
    """``fuse(lateral(c), upsample(p))``: an FPN top-down step, with FaPN's FSM and concat as options.

    Has the calling convention of :class:`~fapn.layers.FeatureAlignModule` so the two are interchangeable
    in a pyramid. With ``feature_selection=False`` and ``fusion="sum"`` it is exactly the merge of
    :class:`torchvision.ops.FeaturePyramidNetwork` (with ``upsample_mode="nearest"``).

    Args:
        in_channels: channels of the bottom-up feature.
        channels: pyramid width.
        feature_selection: FSM as lateral, else a 1x1 conv with bias.
        upsample_mode: ``"nearest"`` (FPN) or ``"bilinear"``.
        fusion: ``"sum"`` (FPN) or ``"concat"`` (concatenation then a 1x1 conv with bias).
        norm: ``None``, ``"GN"`` or ``"BN"`` after a plain 1x1 lateral (detectron2's FPN; not on an FSM).

    Example:
        >>> merge = FPNMerge(256, 128, feature_selection=False, upsample_mode="nearest")
        >>> merge(torch.randn(1, 256, 32, 64), torch.randn(1, 128, 16, 32)).shape
        torch.Size([1, 128, 32, 64])
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        feature_selection: bool = False,
        upsample_mode: UpsampleMode = "nearest",
        fusion: Fusion = "sum",
        norm: Norm | None = None,
    ) -> None:
        super().__init__()
        check_merge_options(upsample_mode, fusion)
        self.in_channels = in_channels
        self.channels = channels
        self.upsample_mode = upsample_mode
        self.fusion = fusion
        self.lateral = make_lateral(in_channels, channels, feature_selection, norm)
        self.concat_fuse: nn.Module | None = None
        if fusion == "concat":
            self.concat_fuse = make_concat_fuse(channels)

    def forward(self, lateral: Tensor, coarse: Tensor) -> Tensor:
        selected = self.lateral(lateral)
        upsampled = upsample_to(coarse, [selected.shape[-2], selected.shape[-1]], self.upsample_mode)
        if self.concat_fuse is not None:
            return self.concat_fuse(torch.cat([upsampled, selected], dim=1))
        return selected + upsampled
