"""Pieces shared by the two top-down merges (FAM and FPN's): lateral, upsampling, option checks."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.conv_norm import Conv2dNorm, Norm
from fapn.layers.fsm import FeatureSelectionModule
from fapn.layers.init import c2_xavier_fill

__all__ = ["UpsampleMode", "Fusion", "check_merge_options", "make_lateral", "upsample_to", "make_concat_fuse"]

UpsampleMode = Literal["bilinear", "nearest"]
Fusion = Literal["sum", "concat"]


def check_merge_options(upsample_mode: str, fusion: str) -> None:
    """Raise ``ValueError`` for an unknown upsampling mode or fusion."""
    if upsample_mode not in ("bilinear", "nearest"):
        raise ValueError(f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}")
    if fusion not in ("sum", "concat"):
        raise ValueError(f"fusion must be 'sum' or 'concat', got {fusion!r}")


def make_lateral(in_channels: int, channels: int, feature_selection: bool, norm: Norm | None = None) -> nn.Module:
    """An FSM (FaPN) or FPN's 1x1 conv (``c2_xavier_fill``), ``in_channels -> channels``.

    ``norm`` applies to the plain conv only, which then has no bias (detectron2's FPN); the authors never normalise
    the FSM (their ``FeatureAlign_V2`` builds it with ``norm=""``).
    """
    if feature_selection:
        return FeatureSelectionModule(in_channels, channels)
    conv = Conv2dNorm(in_channels, channels, kernel_size=1, bias=norm is None, norm=norm)
    c2_xavier_fill(conv)
    return conv


def make_concat_fuse(channels: int) -> nn.Conv2d:
    """The 1x1 conv ``2C -> C`` (with bias, ``c2_xavier_fill``: ours) after a concatenation."""
    conv = nn.Conv2d(2 * channels, channels, kernel_size=1)
    c2_xavier_fill(conv)
    return conv


def upsample_to(coarse: Tensor, size: list[int], mode: str) -> Tensor:
    """``coarse`` resized to ``size``: nearest, or bilinear with ``align_corners=False``."""
    if mode == "nearest":
        return F.interpolate(coarse, size=size, mode="nearest")
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
