"""Feature Alignment Module (FAM) of FaPN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.conv_norm import Conv2dNorm, Norm
from fapn.layers.deform_conv import ModulatedDeformConv2d
from fapn.layers.init import c2_xavier_fill
from fapn.layers.pyramid_ops import (
    Fusion,
    UpsampleMode,
    check_merge_options,
    make_concat_fuse,
    make_lateral,
    upsample_to,
)

__all__ = ["FeatureAlignModule", "UpsampleMode", "Fusion"]


class FeatureAlignModule(nn.Module):
    """Aligns an upsampled coarse feature to a fine lateral one with a modulated deformable conv.

    The authors' ``FeatureAlign_V2``, step by step (``C`` = ``channels``, ``G`` = ``offset_groups``):

    1. ``s = lateral(c)``: an FSM (``feature_selection=True``) or FPN's plain 1x1 conv with bias;
    2. ``up = upsample(p)`` to ``s``'s exact size (``bilinear`` with ``align_corners=False`` in the
       detectron2 neck; ``nearest`` in the supplementary's real-time network);
    3. ``o = conv1x1_{2C->C, no bias}(cat[s, 2 * up])``, then ``norm`` if one is given; the factor 2 is only on
       this offset branch, "to enlarge the magnitude of upsampled features in case of suppression";
    4. ``offset, mask = conv3x3_{C->3*G*9}(o)``, zero-initialised: first ``2*G*9`` channels are
       ``(dy, dx)`` offsets, the last ``G*9`` mask logits (sigmoid). At initialisation the offsets are 0 and
       the mask 0.5, so the module starts as ``0.5 x`` a plain 3x3 conv of ``up``;
    5. ``a = relu(dcn3x3_{C->C}(up, offset, mask))`` (DCNv2, ``G`` offset groups);
    6. fusion: ``out = a + s`` (``"sum"``, the authors' neck) or
       ``out = conv1x1_{2C->C}(cat[a, s])`` (``"concat"``, the supplementary's real-time network).

    Provenance: steps 1-5 and sum fusion are the authors' code; nearest upsampling and concat fusion are the
    supplementary; the bias on the concat conv and its ``c2_xavier_fill`` initialisation are ours (the
    supplementary only says "a Conv 1x1 layer").

    Args:
        in_channels: channels of the bottom-up feature ``c`` fed to the lateral.
        channels: pyramid width ``C``; the coarse input ``p`` must have it, and so does the output.
        feature_selection: FSM as lateral (FaPN) or a 1x1 conv with bias (FPN's lateral, for the ablation).
        upsample_mode: ``"bilinear"`` or ``"nearest"``.
        fusion: ``"sum"`` or ``"concat"``.
        offset_groups: deformable offset groups ``G`` (8 in every released configuration).
        deform_backend: deformable-conv backend, ``None`` for the default.
        norm: ``None``, ``"GN"`` or ``"BN"`` after the 1x1 offset conv, where the authors' ``FeatureAlign_V2``
            puts its ``norm`` (and on a plain 1x1 lateral, which then loses its bias; never on the FSM).

    Example:
        >>> fam = FeatureAlignModule(256, 128, upsample_mode="nearest", fusion="concat")
        >>> fam(torch.randn(1, 256, 32, 64), torch.randn(1, 128, 16, 32)).shape
        torch.Size([1, 128, 32, 64])
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        feature_selection: bool = True,
        upsample_mode: UpsampleMode = "bilinear",
        fusion: Fusion = "sum",
        offset_groups: int = 8,
        deform_backend: str | None = None,
        norm: Norm | None = None,
    ) -> None:
        super().__init__()
        check_merge_options(upsample_mode, fusion)
        self.in_channels = in_channels
        self.channels = channels
        self.upsample_mode = upsample_mode
        self.fusion = fusion
        self.offset_groups = offset_groups
        self.lateral = make_lateral(in_channels, channels, feature_selection, norm)
        self.offset_fuse = Conv2dNorm(2 * channels, channels, kernel_size=1, bias=False, norm=norm)
        c2_xavier_fill(self.offset_fuse)
        self.deform = ModulatedDeformConv2d(
            channels, channels, 3, padding=1, offset_groups=offset_groups, backend=deform_backend
        )
        self.offset_mask = nn.Conv2d(channels, 3 * offset_groups * self.deform.taps, kernel_size=3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        assert self.offset_mask.bias is not None  # built with bias=True
        nn.init.zeros_(self.offset_mask.bias)
        self.concat_fuse: nn.Module | None = None
        if fusion == "concat":
            self.concat_fuse = make_concat_fuse(channels)

    def upsample(self, coarse: Tensor, size: list[int]) -> Tensor:
        """``coarse`` resized to ``size`` with this module's mode."""
        return upsample_to(coarse, size, self.upsample_mode)

    def offsets_and_mask(self, selected: Tensor, upsampled: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets ``[N, 2*G*9, H, W]`` (``(dy, dx)`` pairs) and mask ``[N, G*9, H, W]`` in ``[0, 1]``."""
        fused = self.offset_fuse(torch.cat([selected, upsampled * 2], dim=1))
        offset_mask = self.offset_mask(fused)
        split = 2 * self.offset_groups * self.deform.taps
        return offset_mask[:, :split], torch.sigmoid(offset_mask[:, split:])

    def fuse(self, aligned: Tensor, selected: Tensor) -> Tensor:
        if self.concat_fuse is not None:
            return self.concat_fuse(torch.cat([aligned, selected], dim=1))
        return aligned + selected

    def align(self, lateral: Tensor, coarse: Tensor) -> dict[str, Tensor]:
        """Every intermediate of the module, for inspection and visualisation.

        Returns:
            ``selected`` (``s``), ``upsampled`` (``up``), ``offset``, ``mask``, ``aligned`` (``a``) and ``out``.
        """
        selected = self.lateral(lateral)
        upsampled = self.upsample(coarse, [selected.shape[-2], selected.shape[-1]])
        offset, mask = self.offsets_and_mask(selected, upsampled)
        aligned = F.relu(self.deform(upsampled, offset, mask))
        return {
            "selected": selected,
            "upsampled": upsampled,
            "offset": offset,
            "mask": mask,
            "aligned": aligned,
            "out": self.fuse(aligned, selected),
        }

    def forward(self, lateral: Tensor, coarse: Tensor) -> Tensor:
        """Args:
            lateral: the bottom-up feature ``c``, ``[N, in_channels, H, W]``.
            coarse: the top-down feature ``p``, ``[N, channels, h, w]`` (any size, usually ``H/2 x W/2``).

        Returns:
            ``[N, channels, H, W]``.
        """
        selected = self.lateral(lateral)
        upsampled = self.upsample(coarse, [selected.shape[-2], selected.shape[-1]])
        offset, mask = self.offsets_and_mask(selected, upsampled)
        aligned = F.relu(self.deform(upsampled, offset, mask))
        return self.fuse(aligned, selected)
