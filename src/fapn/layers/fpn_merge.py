"""FPN's top-down merge (lateral + upsampled coarse feature), the FAM-off branch of the ablation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.fam import Fusion, UpsampleMode
from fapn.layers.fsm import FeatureSelectionModule
from fapn.layers.init import c2_xavier_fill

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
    ) -> None:
        super().__init__()
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}")
        if fusion not in ("sum", "concat"):
            raise ValueError(f"fusion must be 'sum' or 'concat', got {fusion!r}")
        self.in_channels = in_channels
        self.channels = channels
        self.upsample_mode = upsample_mode
        self.fusion = fusion
        self.lateral: nn.Module
        if feature_selection:
            self.lateral = FeatureSelectionModule(in_channels, channels)
        else:
            self.lateral = nn.Conv2d(in_channels, channels, kernel_size=1)
            c2_xavier_fill(self.lateral)
        self.concat_fuse: nn.Module | None = None
        if fusion == "concat":
            self.concat_fuse = nn.Conv2d(2 * channels, channels, kernel_size=1)
            c2_xavier_fill(self.concat_fuse)

    def forward(self, lateral: Tensor, coarse: Tensor) -> Tensor:
        selected = self.lateral(lateral)
        size = [selected.shape[-2], selected.shape[-1]]
        if self.upsample_mode == "nearest":
            upsampled = F.interpolate(coarse, size=size, mode="nearest")
        else:
            upsampled = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        if self.concat_fuse is not None:
            return self.concat_fuse(torch.cat([upsampled, selected], dim=1))
        return selected + upsampled
