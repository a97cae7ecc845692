"""MaskFormer's pixel decoders: its FPN (``BasePixelDecoder``) and the FaPN authors' one (FAM without FSM)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.conv_norm import Conv2dNorm, Norm
from fapn.layers.fam import FeatureAlignModule
from fapn.layers.init import c2_xavier_fill

__all__ = ["PixelDecoder"]


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: Norm | None) -> Conv2dNorm:
    # detectron2's Conv2d(..., bias=(norm == ""), norm=get_norm(norm)) with c2_xavier_fill, as MaskFormer.
    conv = Conv2dNorm(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm is None, norm=norm)
    c2_xavier_fill(conv)
    return conv


class PixelDecoder(nn.Module):
    """Per-pixel embeddings at stride 4 from a backbone pyramid (strides 4, 8, 16, 32).

    Top-down, as MaskFormer's ``BasePixelDecoder``:

    * coarsest level: ``y = relu(norm(conv3x3(C5)))`` (no lateral conv);
    * every finer level ``i``: ``l = norm(conv1x1(C_i))``, then
      FPN (``feature_alignment=False``): ``y = l + nearest_upsample(y)``;
      FaPN (``feature_alignment=True``, the FaPN authors' ``BasePixelFANDecoder``): ``y = FAM(l, y)``, a
      :class:`~fapn.layers.FeatureAlignModule` without FSM (``o = norm(conv1x1(cat[l, 2 * up]))`` with
      bilinear ``up``, deformable conv, ReLU, ``+ l``);
      then ``y = relu(norm(conv3x3(y)))``, carried down;
    * ``mask_features = conv3x3(y)`` with bias, no norm.

    With ``share_offset_norm=True`` (the default, as in the authors' code, where one ``get_norm`` module is
    passed to both) the FAM's offset-conv norm *is* the level's output-conv norm: one set of GroupNorm
    parameters used twice.

    Args:
        in_channels_list: channels of the maps, highest resolution first.
        conv_dim: decoder width (256).
        mask_dim: channels of the per-pixel embeddings (256).
        norm: ``"GN"`` (MaskFormer's, 32 groups), ``"BN"`` or ``None`` (then the convs get a bias).
        feature_alignment: FaPN's FAM instead of FPN's upsample-and-add.
        share_offset_norm: tie the offset-conv norm to the output-conv norm (authors' code).
        deform_backend: deformable-conv backend, ``None`` for the default.

    Example:
        >>> import torch
        >>> decoder = PixelDecoder([16, 24, 40, 48], conv_dim=32, mask_dim=16)
        >>> feats = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip([16, 24, 40, 48], [4, 8, 16, 32])]
        >>> decoder(feats).shape
        torch.Size([1, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: Norm | None = "GN",
        feature_alignment: bool = True,
        share_offset_norm: bool = True,
        deform_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.feature_alignment = feature_alignment
        *fine, coarsest = list(in_channels_list)
        self.top = _conv_norm(coarsest, conv_dim, 3, norm)
        self.laterals = nn.ModuleList()  # FPN: the 1x1 convs; FaPN: the FAMs (which hold them)
        self.output_convs = nn.ModuleList()
        for channels in reversed(fine):  # top-down order
            output_conv = _conv_norm(conv_dim, conv_dim, 3, norm)
            if feature_alignment:
                fam = FeatureAlignModule(
                    channels,
                    conv_dim,
                    feature_selection=False,
                    upsample_mode="bilinear",
                    fusion="sum",
                    deform_backend=deform_backend,
                    norm=norm,
                )
                if share_offset_norm and norm is not None:
                    output_conv.norm = fam.offset_fuse.norm
                self.laterals.append(fam)
            else:
                self.laterals.append(_conv_norm(channels, conv_dim, 1, norm))
            self.output_convs.append(output_conv)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=3, padding=1)
        c2_xavier_fill(self.mask_features)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Args:
            features: the maps, highest resolution first, each half the size of the previous (any rounding).

        Returns:
            ``[N, mask_dim, H_0, W_0]`` at the first map's size.
        """
        *fine, coarsest = list(features)
        y = F.relu(self.top(coarsest))
        for lateral, output_conv, x in zip(self.laterals, self.output_convs, reversed(fine)):
            if self.feature_alignment:
                y = lateral(x, y)
            else:
                x = lateral(x)
                y = x + F.interpolate(y, size=x.shape[-2:], mode="nearest")
            y = F.relu(output_conv(y))
        return self.mask_features(y)
