"""Pyramid backbones shared by the semantic and the detection models: a ResNet body + the FaPN neck (or
torchvision's FPN, the baseline), with torchvision's freezing rules.

``BackboneWithFaPN`` is torchvision's ``BackboneWithFPN`` with the FaPN neck; :func:`resnet_pyramid` is the one
factory the builders in :mod:`fapn.models.semantic_fpn` and :mod:`fapn.models.detection` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, _validate_trainable_layers
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from fapn.models.backbones import TIMM_PREFIX, BackboneWeights, build_backbone, load_resnet_weights
from fapn.necks.fapn import FaPN

__all__ = [
    "BackboneWithFaPN",
    "resnet_fapn_backbone",
    "resnet_fapn_extractor",
    "freeze_resnet_layers",
    "resnet_pyramid",
    "p6p7_from_c5",
    "NECKS",
    "Neck",
    "Levels",
]

Neck = Literal["fapn", "fpn"]
NECKS: tuple[str, ...] = ("fapn", "fpn")
Levels = Literal["p2-p6", "p3-p7"]


class BackboneWithFaPN(nn.Module):
    """A feature extractor followed by the FaPN neck, interchangeable with torchvision's ``BackboneWithFPN``.

    The neck has the authors' detectron2 structure by default (FSM laterals, FAM with bilinear upsampling and
    sum fusion, 3x3 output convs below the top level, a plain 1x1 conv on the top level). Extra keyword
    arguments go to :class:`fapn.FaPN`, so the ablations (``feature_alignment=False`` and so on) are one
    argument away.

    Args:
        backbone: the body, e.g. a torchvision ResNet.
        return_layers: body module name -> output name (torchvision uses ``"0"``, ``"1"``, ...; the detectors'
            default anchor generator and RoI pooler expect ``"0".."3"`` plus ``"pool"``); ``None`` when the body
            already returns the ``OrderedDict`` of maps (e.g. :func:`fapn.models.backbones.build_backbone`).
        in_channels_list: channels of each returned map, highest resolution first.
        out_channels: pyramid width (256 for the detectors).
        extra_blocks: appended levels; ``LastLevelMaxPool`` (P6, Faster/Mask R-CNN) when ``None``.
        **neck_kwargs: passed to :class:`fapn.FaPN`.

    Attributes:
        out_channels: the pyramid width, read by torchvision's detectors.

    Example:
        >>> import torch
        >>> import torchvision
        >>> body = torchvision.models.resnet18()
        >>> backbone = BackboneWithFaPN(
        ...     body, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}, [64, 128, 256, 512], 64
        ... )
        >>> [(k, tuple(v.shape)) for k, v in backbone(torch.randn(1, 3, 64, 64)).items()]
        [('0', (1, 64, 16, 16)), ('1', (1, 64, 8, 8)), ('2', (1, 64, 4, 4)), ('3', (1, 64, 2, 2)), ('pool', (1, 64, 1, 1))]
    """

    def __init__(
        self,
        backbone: nn.Module,
        return_layers: dict[str, str] | None,
        in_channels_list: list[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        **neck_kwargs: Any,
    ) -> None:
        super().__init__()
        if extra_blocks is None:
            extra_blocks = LastLevelMaxPool()
        # return_layers=None: the body already returns the OrderedDict of maps (a timm encoder, build_backbone)
        self.body = (
            backbone if return_layers is None else IntermediateLayerGetter(backbone, return_layers=return_layers)
        )
        self.fapn = FaPN(in_channels_list, out_channels, extra_blocks=extra_blocks, **neck_kwargs)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fapn(self.body(x))


def freeze_resnet_layers(backbone: resnet.ResNet, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages of a ResNet in place, as torchvision does.

    Args:
        backbone: a torchvision-named ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``).
        trainable_layers: 0 (all frozen) to 5 (all trainable). detectron2's ``FREEZE_AT: 2`` is 3 here.
    """
    if trainable_layers < 0 or trainable_layers > 5:
        raise ValueError(f"trainable_layers should be in the range [0, 5], got {trainable_layers}")
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers_to_train.append("bn1")
    for name, parameter in backbone.named_parameters():
        if all(not name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)


def resnet_fapn_extractor(
    backbone: resnet.ResNet,
    trainable_layers: int,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    out_channels: int = 256,
    **neck_kwargs: Any,
) -> BackboneWithFaPN:
    """torchvision's ``_resnet_fpn_extractor`` with FaPN: freeze stages, pick stages, add the neck.

    Args:
        backbone: a torchvision ResNet (any depth), or :func:`~fapn.models.detection.detectron2_resnet`.
        trainable_layers: see :func:`freeze_resnet_layers`.
        returned_layers: stages 1-4 to feed the neck (default all; RetinaNet uses ``[2, 3, 4]``).
        extra_blocks: ``LastLevelMaxPool`` when ``None``.
        out_channels: pyramid width.
        **neck_kwargs: passed to :class:`fapn.FaPN`.
    """
    freeze_resnet_layers(backbone, trainable_layers)
    if returned_layers is None:
        returned_layers = [1, 2, 3, 4]
    if min(returned_layers) <= 0 or max(returned_layers) >= 5:
        raise ValueError(f"Each returned layer should be in the range [1, 4], got {returned_layers}")
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned_layers)}
    in_channels_stage2 = backbone.inplanes // 8
    in_channels_list = [in_channels_stage2 * 2 ** (i - 1) for i in returned_layers]
    return BackboneWithFaPN(
        backbone, return_layers, in_channels_list, out_channels, extra_blocks=extra_blocks, **neck_kwargs
    )


def resnet_fapn_backbone(
    *,
    backbone_name: str,
    weights: resnet.WeightsEnum | None,
    norm_layer: Callable[..., nn.Module] = misc_nn_ops.FrozenBatchNorm2d,
    trainable_layers: int = 3,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    **neck_kwargs: Any,
) -> BackboneWithFaPN:
    """torchvision's ``resnet_fpn_backbone`` with the FaPN neck (same arguments).

    Args:
        backbone_name: ``"resnet18"``, ``"resnet50"``, ``"resnet101"``, ... (any torchvision ResNet).
        weights: ImageNet weights enum for the body, or ``None``.
        norm_layer: ``FrozenBatchNorm2d`` (default, as torchvision and the authors) or ``nn.BatchNorm2d``.
        trainable_layers: stages left trainable, 0 to 5.
        returned_layers: stages 1-4 fed to the neck.
        extra_blocks: ``LastLevelMaxPool`` when ``None``.
        **neck_kwargs: passed to :class:`fapn.FaPN`.

    Example:
        >>> backbone = resnet_fapn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
        >>> backbone.out_channels
        256
    """
    body = resnet.__dict__[backbone_name](weights=weights, norm_layer=norm_layer)
    return resnet_fapn_extractor(body, trainable_layers, returned_layers, extra_blocks, **neck_kwargs)


def p6p7_from_c5(c5_channels: int, out_channels: int) -> LastLevelP6P7:
    """RetinaNet's P6 = conv3x3/2(C5), P7 = conv3x3/2(relu(P6)), as the authors' ``LastLevelP6P7(2048, 256)``.

    torchvision's block reads C5 only when its input and output widths differ; this one always reads C5 (a
    ResNet-18 body with a 512-wide pyramid would otherwise silently switch to P5).
    """
    block = LastLevelP6P7(c5_channels, out_channels)
    block.use_P5 = False
    return block


def resnet_pyramid(
    backbone: str = "resnet50",
    *,
    neck: Neck = "fapn",
    weights_backbone: BackboneWeights = None,
    trainable_backbone_layers: int | None = None,
    is_trained: bool | None = None,
    frozen_batch_norm: bool | None = None,
    levels: Levels = "p2-p6",
    fapn_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision ResNet + the FaPN neck (or torchvision's FPN), frozen as torchvision's builders freeze.

    Frozen batch norm and 3 trainable stages when weights are given (torchvision, and detectron2's
    ``FREEZE_AT: 2``); trainable batch norm and all stages when training from scratch.

    Args:
        backbone: a torchvision ResNet name (``"resnet18"`` ... ``"resnet101"``, ``"resnext50_32x4d"``, ...), or
            ``"timm:<name>"`` (see :func:`timm_pyramid`).
        neck: ``"fapn"`` (:class:`BackboneWithFaPN`) or ``"fpn"`` (torchvision's ``BackboneWithFPN``, the baseline,
            structurally detectron2's FPN).
        weights_backbone: ImageNet weights (enum, enum name, or a local ``.pth``), or ``None``.
        trainable_backbone_layers: 0 to 5, or ``None`` for the default.
        is_trained: whether any weights will be loaded (changes the defaults, as in torchvision); ``None``:
            ``weights_backbone is not None``.
        frozen_batch_norm: ``FrozenBatchNorm2d`` or ``BatchNorm2d``; ``None`` follows ``is_trained`` (torchvision).
            Set it to rebuild a model trained from ImageNet weights without loading them again.
        levels: ``"p2-p6"`` (C2-C5 and a max-pooled P6: Faster/Mask R-CNN, Panoptic FPN, semantic FPN) or
            ``"p3-p7"`` (C3-C5, P6/P7 by strided convs on C5: RetinaNet, as the authors' ``LastLevelP6P7``).
        fapn_kwargs: extra arguments of :class:`fapn.FaPN` (ablations, ``norm``); ``neck="fapn"`` only.

    Example:
        >>> import torch
        >>> pyramid = resnet_pyramid("resnet18", levels="p3-p7")
        >>> [(k, v.shape[-1]) for k, v in pyramid(torch.randn(1, 3, 64, 64)).items()]
        [('0', 8), ('1', 4), ('2', 2), ('p6', 1), ('p7', 1)]
    """
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
    if levels not in ("p2-p6", "p3-p7"):
        raise ValueError(f"levels must be 'p2-p6' or 'p3-p7', got {levels!r}")
    if backbone.startswith(TIMM_PREFIX):
        return timm_pyramid(
            backbone,
            neck=neck,
            weights_backbone=weights_backbone,
            is_trained=is_trained,
            frozen_batch_norm=frozen_batch_norm,
            levels=levels,
            fapn_kwargs=fapn_kwargs,
        )
    if backbone not in resnet.__dict__ or not backbone.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(f"backbone must be a torchvision ResNet name such as 'resnet50', got {backbone!r}")
    if fapn_kwargs and neck != "fapn":
        raise ValueError("fapn_kwargs only apply to neck='fapn'")
    trained = weights_backbone is not None if is_trained is None else is_trained
    trainable = _validate_trainable_layers(trained, trainable_backbone_layers, 5, 3)
    frozen = trained if frozen_batch_norm is None else frozen_batch_norm
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    body = resnet.__dict__[backbone](weights=None, norm_layer=norm_layer)
    load_resnet_weights(body, backbone, weights_backbone)
    returned_layers, extra_blocks = None, None
    if levels == "p3-p7":
        returned_layers, extra_blocks = [2, 3, 4], p6p7_from_c5(body.inplanes, 256)
    if neck == "fpn":
        return _resnet_fpn_extractor(body, trainable, returned_layers=returned_layers, extra_blocks=extra_blocks)
    return resnet_fapn_extractor(body, trainable, returned_layers, extra_blocks, **(fapn_kwargs or {}))


def timm_pyramid(
    backbone: str,
    *,
    neck: Neck = "fapn",
    weights_backbone: BackboneWeights = None,
    is_trained: bool | None = None,
    frozen_batch_norm: bool | None = None,
    levels: Levels = "p2-p6",
    fapn_kwargs: dict[str, Any] | None = None,
    out_channels: int = 256,
) -> BackboneWithFaPN:
    """A timm encoder (``"timm:<name>"``) + the FaPN neck, or the neck configured as torchvision's FPN
    (``neck="fpn"``: 1x1 laterals, nearest upsampling, 3x3 output convs on every level, identical to
    ``torchvision.ops.FeaturePyramidNetwork``), with the keys the detectors expect (``"0"``, ``"1"``, ...).

    Every encoder stage stays trainable (timm encoders have no torchvision stage names to freeze); batch norms
    are frozen (timm's ``freeze_batch_norm_2d``) exactly when ImageNet weights are loaded, as the ResNet path.

    Args:
        backbone: ``"timm:<name>"`` with maps at strides 4-32 (``p2-p6``) or 8-32 (``p3-p7``).
        neck, weights_backbone, is_trained, frozen_batch_norm, levels, fapn_kwargs: as :func:`resnet_pyramid`.
        out_channels: pyramid width.

    Example:
        >>> pyramid = timm_pyramid("timm:resnet10t", levels="p3-p7")  # doctest: +SKIP
        >>> [k for k in pyramid(torch.randn(1, 3, 64, 64))]  # doctest: +SKIP
        ['0', '1', '2', 'p6', 'p7']
    """
    strides = (4, 8, 16, 32) if levels == "p2-p6" else (8, 16, 32)
    body = build_backbone(backbone, weights_backbone, strides=strides, names=[str(i) for i in range(len(strides))])
    trained = weights_backbone is not None if is_trained is None else is_trained
    if trained if frozen_batch_norm is None else frozen_batch_norm:
        from timm.layers import freeze_batch_norm_2d

        body.model = freeze_batch_norm_2d(body.model)
    extra_blocks = LastLevelMaxPool() if levels == "p2-p6" else p6p7_from_c5(body.channels[-1], out_channels)
    kwargs: dict[str, Any] = dict(fapn_kwargs or {})
    if neck == "fpn":
        kwargs = dict(feature_alignment=False, feature_selection=False, upsample_mode="nearest", top_output_conv=True)
    return BackboneWithFaPN(body, None, body.channels, out_channels, extra_blocks=extra_blocks, **kwargs)
