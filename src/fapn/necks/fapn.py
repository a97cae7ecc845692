"""The FaPN neck: a drop-in replacement for :class:`torchvision.ops.FeaturePyramidNetwork`."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from fapn.layers.conv_norm import Conv2dNorm, Norm
from fapn.layers.fam import FeatureAlignModule, Fusion, UpsampleMode
from fapn.layers.fpn_merge import FPNMerge
from fapn.layers.fsm import FeatureSelectionModule
from fapn.layers.init import c2_xavier_fill

__all__ = ["FaPN"]


class FaPN(nn.Module):
    """Feature-aligned Pyramid Network neck, with torchvision's FPN calling convention.

    Structure of the authors' detectron2 neck (the defaults):

    * top level: ``P_top = conv1x1(C_top)`` with bias, no FSM and no 3x3 output conv;
    * every other level, coarse to fine: ``prev = FAM(C_i, prev)``, ``P_i = conv3x3(prev)``; the top-down
      path carries the FAM output, not ``P_i``;
    * ``extra_blocks`` (e.g. :class:`torchvision.ops.feature_pyramid_network.LastLevelMaxPool` for P6) run on
      the outputs as in torchvision;
    * ``norm`` (the authors' ``FAN(norm=...)``, ``cfg.MODEL.FPN.NORM``; none in their released configurations)
      follows the top lateral, each FAM's 1x1 offset conv and each output conv, which then have no bias; the
      FSM, the offset/mask conv and the deformable conv are never normalised.

    The switches give the ablation: ``feature_alignment=False`` replaces each FAM by FPN's
    ``lateral + upsample`` (:class:`~fapn.layers.FPNMerge`); ``feature_selection`` picks FSM or a 1x1 conv as
    lateral; ``fusion`` sums or concatenates. With ``feature_alignment=False, feature_selection=False,
    upsample_mode="nearest", top_output_conv=True`` the neck computes exactly what torchvision's
    ``FeaturePyramidNetwork`` computes with the same weights.

    Args:
        in_channels_list: channels of each input map, highest resolution first.
        out_channels: pyramid width (256 in the authors' neck).
        extra_blocks: an ``ExtraFPNBlock`` appended to the outputs, or ``None``.
        feature_alignment: FAM at every level but the top (FaPN) or FPN's plain merge.
        feature_selection: FSM (FaPN) or a 1x1 conv with bias as lateral, below the top level.
        fusion: ``"sum"`` (authors' neck) or ``"concat"`` (real-time network).
        upsample_mode: ``"bilinear"`` (authors' neck) or ``"nearest"`` (FPN, real-time network).
        top_feature_selection: FSM instead of a 1x1 conv on the top level (real-time network; ours to expose).
        output_convs: a 3x3 output conv per level (detectron2 neck) or none (real-time network).
        top_output_conv: a 3x3 output conv on the top level too (torchvision's FPN; not the authors').
        offset_groups: deformable offset groups in each FAM.
        deform_backend: deformable-conv backend, ``None`` for the default.
        norm: ``None`` (the authors' released necks), ``"GN"`` (``GroupNorm(32, C)``) or ``"BN"``, where the
            authors' neck applies its ``norm`` (see above).

    Example:
        >>> from collections import OrderedDict
        >>> import torch
        >>> from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
        >>> neck = FaPN([64, 128, 256], 32, extra_blocks=LastLevelMaxPool())
        >>> feats = OrderedDict(
        ...     c2=torch.randn(1, 64, 32, 32), c3=torch.randn(1, 128, 16, 16), c4=torch.randn(1, 256, 8, 8)
        ... )
        >>> [(k, tuple(v.shape)) for k, v in neck(feats).items()]
        [('c2', (1, 32, 32, 32)), ('c3', (1, 32, 16, 16)), ('c4', (1, 32, 8, 8)), ('pool', (1, 32, 4, 4))]
    """

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        *,
        feature_alignment: bool = True,
        feature_selection: bool = True,
        fusion: Fusion = "sum",
        upsample_mode: UpsampleMode = "bilinear",
        top_feature_selection: bool = False,
        output_convs: bool = True,
        top_output_conv: bool = False,
        offset_groups: int = 8,
        deform_backend: str | None = None,
        norm: Norm | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels_list) < 1 or any(c <= 0 for c in in_channels_list):
            raise ValueError(f"in_channels_list must be non-empty positive ints, got {in_channels_list}")
        if extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
            raise TypeError(f"extra_blocks should be of type ExtraFPNBlock not {type(extra_blocks)}")
        self.in_channels_list = list(in_channels_list)
        self.out_channels = out_channels
        self.norm = norm
        bias = norm is None  # detectron2: a normalised conv has no bias
        self.top_lateral: nn.Module
        if top_feature_selection:
            self.top_lateral = FeatureSelectionModule(in_channels_list[-1], out_channels)
        else:
            self.top_lateral = Conv2dNorm(in_channels_list[-1], out_channels, kernel_size=1, bias=bias, norm=norm)
            c2_xavier_fill(self.top_lateral)
        self.merges = nn.ModuleList()
        for in_channels in in_channels_list[:-1]:
            merge: nn.Module
            if feature_alignment:
                merge = FeatureAlignModule(
                    in_channels,
                    out_channels,
                    feature_selection=feature_selection,
                    upsample_mode=upsample_mode,
                    fusion=fusion,
                    offset_groups=offset_groups,
                    deform_backend=deform_backend,
                    norm=norm,
                )
            else:
                merge = FPNMerge(
                    in_channels,
                    out_channels,
                    feature_selection=feature_selection,
                    upsample_mode=upsample_mode,
                    fusion=fusion,
                    norm=norm,
                )
            self.merges.append(merge)
        self.output_convs = nn.ModuleList()
        if output_convs:
            for _ in in_channels_list[:-1]:
                conv = Conv2dNorm(out_channels, out_channels, kernel_size=3, padding=1, bias=bias, norm=norm)
                c2_xavier_fill(conv)
                self.output_convs.append(conv)
        self.top_output: nn.Module | None = None
        if top_output_conv:
            self.top_output = Conv2dNorm(out_channels, out_channels, kernel_size=3, padding=1, bias=bias, norm=norm)
            c2_xavier_fill(self.top_output)
        self.extra_blocks = extra_blocks

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Args:
            x: feature maps, highest resolution first (an ``OrderedDict``, as torchvision's FPN takes).

        Returns:
            ``OrderedDict`` of ``out_channels`` maps with the same names, highest resolution first, then the
            extra blocks' names.
        """
        names = list(x.keys())
        features = list(x.values())
        if len(features) != len(self.in_channels_list):
            raise ValueError(
                f"FaPN was built for {len(self.in_channels_list)} input maps, got {len(features)} ({names})"
            )
        prev = self.top_lateral(features[-1])
        top = prev if self.top_output is None else self.top_output(prev)
        results = [top]
        for idx in range(len(features) - 2, -1, -1):
            prev = self.merges[idx](features[idx], prev)
            results.insert(0, self.output_convs[idx](prev) if len(self.output_convs) > 0 else prev)
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, features, names)
        return OrderedDict(zip(names, results))
