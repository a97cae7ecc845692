"""``maskformer_fapn`` and ``maskformer_fpn``: MaskFormer with the FaPN or the FPN pixel decoder."""

from __future__ import annotations

from typing import Any

from fapn.layers.conv_norm import Norm
from fapn.models.backbones import BackboneWeights, build_backbone
from fapn.models.maskformer.criterion import MaskFormerLoss
from fapn.models.maskformer.model import MaskFormer
from fapn.models.maskformer.pixel_decoder import PixelDecoder
from fapn.models.maskformer.transformer_decoder import TransformerPredictor
from fapn.models.registry import register_model

__all__ = ["maskformer_fapn", "maskformer_fpn", "build_maskformer"]


def build_maskformer(
    backbone: str,
    num_classes: int,
    weights_backbone: BackboneWeights,
    feature_alignment: bool,
    *,
    ignore_index: int = 255,
    num_queries: int = 100,
    hidden_dim: int = 256,
    nheads: int = 8,
    dim_feedforward: int = 2048,
    dec_layers: int = 6,
    dropout: float = 0.1,
    conv_dim: int = 256,
    mask_dim: int = 256,
    norm: Norm | None = "GN",
    deep_supervision: bool = True,
    no_object_weight: float = 0.1,
    class_weight: float = 1.0,
    mask_weight: float = 20.0,
    dice_weight: float = 1.0,
    deform_backend: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> MaskFormer:
    """MaskFormer with either pixel decoder; the arguments of :func:`maskformer_fapn`."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    body = build_backbone(backbone, weights_backbone, strides=(4, 8, 16, 32), **(backbone_kwargs or {}))
    decoder = PixelDecoder(body.channels, conv_dim, mask_dim, norm, feature_alignment=feature_alignment,
                           deform_backend=deform_backend)
    predictor = TransformerPredictor(body.channels[-1], num_classes, hidden_dim, num_queries, nheads,
                                     dim_feedforward, dec_layers, dropout, mask_dim)
    criterion = MaskFormerLoss(num_classes, class_weight, mask_weight, dice_weight, no_object_weight)
    return MaskFormer(body, num_classes, decoder, predictor, criterion, deep_supervision, ignore_index)


@register_model()
def maskformer_fapn(
    backbone: str = "resnet50",
    num_classes: int = 150,
    weights_backbone: BackboneWeights = None,
    *,
    ignore_index: int = 255,
    **kwargs: Any,
) -> MaskFormer:
    """MaskFormer with the FaPN pixel decoder (the FaPN authors' ``BasePixelFANDecoder``: FAM, no FSM).

    Args:
        backbone: ``"resnet50"``, ``"resnet101"`` (torchvision) or ``"timm:<name>"`` with maps at strides 4-32
            (``"timm:swin_tiny_patch4_window7_224"``, ``"timm:convnext_tiny"``; needs ``fapn[timm]``).
        num_classes: semantic classes (150 for ADE20K).
        weights_backbone: ImageNet weights (see :func:`fapn.models.backbones.build_backbone`), ``None``: random.
        ignore_index: label of unlabelled pixels in the training targets.
        **kwargs: keyword-only options, MaskFormer's defaults in brackets: ``num_queries`` (100), ``hidden_dim`` (256), ``nheads`` (8), ``dim_feedforward`` (2048),
            ``dec_layers`` (6), ``dropout`` (0.1), ``conv_dim`` (256), ``mask_dim`` (256), ``norm`` ("GN"),
            ``deep_supervision`` (True), ``no_object_weight`` (0.1), ``class_weight`` (1), ``mask_weight``
            (20, focal), ``dice_weight`` (1), ``deform_backend``, ``backbone_kwargs`` (for ``timm.create_model``).

    Returns:
        a :class:`MaskFormer`: eval ``[N, 3, H, W] -> [N, num_classes, H, W]`` scores; train
        ``(images, targets [N, H, W]) -> dict`` of losses.

    Example:
        >>> model = maskformer_fapn(backbone="resnet50", num_classes=150).eval()  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 512, 512)).shape  # doctest: +SKIP
        torch.Size([1, 150, 512, 512])
    """
    return build_maskformer(backbone, num_classes, weights_backbone, True, ignore_index=ignore_index, **kwargs)


@register_model()
def maskformer_fpn(
    backbone: str = "resnet50",
    num_classes: int = 150,
    weights_backbone: BackboneWeights = None,
    *,
    ignore_index: int = 255,
    **kwargs: Any,
) -> MaskFormer:
    """MaskFormer with its own FPN pixel decoder (``BasePixelDecoder``); arguments as :func:`maskformer_fapn`."""
    return build_maskformer(backbone, num_classes, weights_backbone, False, ignore_index=ignore_index, **kwargs)
