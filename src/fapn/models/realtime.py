"""The real-time semantic segmentation FaPN of the supplementary (section 2), and its ablation."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.fam import Fusion
from fapn.models.backbones import TIMM_PREFIX, BackboneWeights, build_backbone
from fapn.models.inputs import check_image_batch
from fapn.models.registry import register_model
from fapn.necks.fapn import FaPN

__all__ = [
    "RealtimeFaPN",
    "realtime_fapn",
    "realtime_neck",
    "NECKS",
    "BACKBONES",
    "Neck",
    "NeckSpec",
    "SegmentationHead",
]

Neck = Literal["fpn", "fpn+fam", "fpn+fam+fsm", "fapn"]
"""The real-time network's necks: FPN, FaPN, and the two configurations between them that Table 1 ablates."""


@dataclass(frozen=True)
class NeckSpec:
    """One neck of the real-time network: one row of the supplementary's Table 1 ablation."""

    feature_alignment: bool
    feature_selection: bool
    fusion: Fusion
    paper_name: str


NECKS: dict[str, NeckSpec] = {
    "fpn": NeckSpec(False, False, "sum", "FPN"),
    "fpn+fam": NeckSpec(True, False, "sum", "+ FAM"),
    "fpn+fam+fsm": NeckSpec(True, True, "sum", "+ FAM + FSM"),
    "fapn": NeckSpec(True, True, "concat", "+ FAM + FSM + Concat"),
}
"""The necks :func:`realtime_fapn` takes, in Table 1's order: ``fpn`` and ``fapn`` are the two necks of the paper,
``fpn+fam`` is FPN with FAM's alignment and no FSM, ``fpn+fam+fsm`` adds FSM but sums instead of concatenating."""

BACKBONES: dict[str, list[int]] = {
    "resnet18": [128, 256, 512],
    "resnet34": [128, 256, 512],
}
"""Backbones of the real-time network and the channels of their C3, C4, C5."""


def _check_neck(neck: str) -> NeckSpec:
    if neck not in NECKS:
        raise ValueError(f"unknown neck {neck!r}; valid necks: {list(NECKS)}")
    return NECKS[neck]


def realtime_neck(
    in_channels_list: list[int], channels: int = 128, neck: str = "fapn", deform_backend: str | None = None
) -> FaPN:
    """The real-time network's pyramid: ``P_top = FSM(C_top)``, then at each finer level ``FAM`` with nearest
    upsampling and concat fusion (``neck="fapn"``; the other keys of :data:`NECKS` are FPN and Table 1's
    configurations between the two), no output convs.

    Args:
        in_channels_list: channels of the input maps, highest resolution first.
        channels: pyramid width.
        neck: a key of :data:`NECKS`.
        deform_backend: deformable-conv backend, ``None`` for the default.
    """
    spec = _check_neck(neck)
    return FaPN(
        in_channels_list,
        channels,
        feature_alignment=spec.feature_alignment,
        feature_selection=spec.feature_selection,
        fusion=spec.fusion,
        upsample_mode="nearest",
        top_feature_selection=spec.feature_selection,
        output_convs=False,
        deform_backend=deform_backend,
    )


class SegmentationHead(nn.Sequential):
    """``conv3x3(C->mid) + BN + ReLU + conv1x1(mid->classes)``.

    The supplementary says only "a prediction layer"; this head is our reconstruction, the one that makes the
    FPN row of Table 1 (11.4M parameters, 44.5 GMAC) come out.

    Args:
        in_channels: channels of P3.
        num_classes: output classes.
        mid_channels: width of the 3x3 conv.
    """

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 64) -> None:
        conv = nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False)
        classifier = nn.Conv2d(mid_channels, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(classifier.weight, std=0.01)
        assert classifier.bias is not None  # built with bias=True
        nn.init.zeros_(classifier.bias)
        super().__init__(conv, nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True), classifier)


class RealtimeFaPN(nn.Module):
    """ResNet-18/34 + a 128-channel FaPN pyramid on C3-C5 + a prediction head at stride 8.

    ``P5 = FSM(C5)``; for ``i = 5, 4``: ``P_{i-1} = FAM(C_{i-1}, P_i)`` with nearest upsampling and concat
    fusion (``conv1x1_{256->128}(cat[aligned, FSM(C_{i-1})])``); the head runs on ``P3`` and the logits are
    bilinearly resized to the input size. The other necks of Table 1's ablation swap FAM for FPN's merge, FSM for
    1x1 convs and concat for sum (see :data:`NECKS`).

    Use :func:`realtime_fapn` to build one.

    Args:
        backbone: a body returning an ``OrderedDict`` of C3, C4, C5.
        in_channels_list: channels of C3, C4, C5.
        num_classes: output classes.
        neck: a key of :data:`NECKS` (kept as :attr:`neck_name`; :attr:`neck` is the neck module).
        channels: pyramid width.
        head_channels: width of the head's 3x3 conv.
        deform_backend: deformable-conv backend, ``None`` for the default.
    """

    stride: int = 32

    def __init__(
        self,
        backbone: nn.Module,
        in_channels_list: list[int],
        num_classes: int,
        neck: str = "fapn",
        channels: int = 128,
        head_channels: int = 64,
        deform_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.neck_name = neck
        self.num_classes = num_classes
        self.backbone = backbone
        self.neck = realtime_neck(in_channels_list, channels, neck, deform_backend)
        self.head = SegmentationHead(channels, num_classes, head_channels)

    def features(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """The pyramid ``P3, P4, P5`` for a normalised image batch."""
        return self.neck(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: normalised float images ``[N, 3, H, W]``, ``N >= 1``, ``H, W >= 32``, in the weights' dtype
                (float64 works on a ``model.double()``).

        Returns:
            logits ``[N, num_classes, H, W]``.
        """
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            check_image_batch(x, self, min_size=self.stride)
        p3 = next(iter(self.features(x).values()))
        logits = self.head(p3)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(renamed_keywords={"variant": "neck"})
def realtime_fapn(
    backbone: str = "resnet18",
    num_classes: int = 19,
    neck: str = "fapn",
    weights_backbone: BackboneWeights = None,
    *,
    channels: int = 128,
    head_channels: int = 64,
    deform_backend: str | None = None,
) -> RealtimeFaPN:
    """The real-time FaPN (supplementary, section 2) or, with another ``neck``, one of its Table 1 ablation rows.

    Args:
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"timm:<name>"``, any timm encoder with maps at strides
            8, 16 and 32 (``"timm:convnext_tiny"``, ``"timm:efficientnet_b0"``; needs ``fapn[timm]``).
        num_classes: output classes (19 for Cityscapes).
        neck: ``"fapn"`` (FAM + FSM + concat fusion) or ``"fpn"``, or one of Table 1's necks between the two:
            ``"fpn+fam"`` (FPN with FAM, no FSM) or ``"fpn+fam+fsm"`` (sum fusion); see :data:`NECKS`. The
            keyword ``variant=`` of earlier releases still works, with a ``FutureWarning``.
        weights_backbone: ImageNet weights for the ResNet: a torchvision enum
            (``torchvision.models.ResNet18_Weights.IMAGENET1K_V1``), its name (``"DEFAULT"``) or a local
            ``.pth`` file; ``None`` for random initialisation. For timm encoders see
            :func:`fapn.models.backbones.timm_backbone`.
        channels: pyramid width (128 in the paper).
        head_channels: width of the head's 3x3 conv (ours: 64).
        deform_backend: deformable-conv backend, ``None`` for the default.

    Returns:
        a :class:`RealtimeFaPN` mapping ``[N, 3, H, W]`` float images to ``[N, num_classes, H, W]`` logits.

    Example:
        >>> model = realtime_fapn(backbone="resnet18", num_classes=19, neck="fapn").eval()
        >>> model(torch.randn(1, 3, 97, 131)).shape
        torch.Size([1, 19, 97, 131])
    """
    if backbone not in BACKBONES and not backbone.startswith(TIMM_PREFIX):
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {sorted(BACKBONES)} or 'timm:<name>'")
    _check_neck(neck)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    body = build_backbone(backbone, weights_backbone, strides=(8, 16, 32))
    return RealtimeFaPN(
        body,
        body.channels,
        num_classes,
        neck=neck,
        channels=channels,
        head_channels=head_channels,
        deform_backend=deform_backend,
    )
