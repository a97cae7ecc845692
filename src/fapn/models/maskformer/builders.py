"""MaskFormer with the FaPN or the FPN pixel decoder: the factory :func:`maskformer` (``neck=``) and the two fixed
architectures ``maskformer_fapn`` and ``maskformer_fpn``."""

from __future__ import annotations

from typing import Any, Literal

from fapn.layers.conv_norm import Norm
from fapn.models.backbones import BackboneWeights, build_backbone
from fapn.models.maskformer.criterion import MaskFormerLoss
from fapn.models.maskformer.model import MaskFormer
from fapn.models.maskformer.pixel_decoder import PixelDecoder
from fapn.models.maskformer.transformer_decoder import TransformerPredictor
from fapn.models.registry import register_model

__all__ = ["maskformer", "maskformer_fapn", "maskformer_fpn"]


@register_model()
def maskformer(
    backbone: str = "resnet50",
    num_classes: int = 150,
    weights_backbone: BackboneWeights = None,
    *,
    neck: Literal["fapn", "fpn"] = "fapn",
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
    """MaskFormer with the FaPN pixel decoder (the FaPN authors' ``BasePixelFANDecoder``: FAM, no FSM) or its own
    FPN pixel decoder (``BasePixelDecoder``).

    Args:
        backbone: ``"resnet50"``, ``"resnet101"`` (torchvision) or ``"timm:<name>"`` with maps at strides 4-32
            (``"timm:swin_tiny_patch4_window7_224"``, ``"timm:convnext_tiny"``; needs ``fapn[timm]``).
        num_classes: semantic classes (150 for ADE20K).
        weights_backbone: ImageNet weights (see :func:`fapn.models.backbones.build_backbone`), ``None``: random.
        neck: the pixel decoder, ``"fapn"`` or ``"fpn"``.
        ignore_index: label of unlabelled pixels in the training targets.
        num_queries: object queries (100).
        hidden_dim, nheads, dim_feedforward, dec_layers, dropout: the transformer decoder (256, 8, 2048, 6, 0.1).
        conv_dim, mask_dim: pixel decoder width and per-pixel embedding channels (256, 256).
        norm: pixel decoder normalisation (``"GN"``: GroupNorm(32); ``"BN"``; ``None``).
        deep_supervision: supervise every decoder layer (True).
        no_object_weight: cross-entropy weight of the no-object class (0.1).
        class_weight, mask_weight, dice_weight: loss and matching-cost weights (1, 20 for the focal loss, 1).
        deform_backend: deformable-conv backend, ``None`` for the default.
        backbone_kwargs: passed to ``timm.create_model`` for a timm encoder (e.g. ``drop_path_rate``).

    Returns:
        a :class:`MaskFormer`: eval ``[N, 3, H, W] -> [N, num_classes, H, W]`` scores; train
        ``(images, targets [N, H, W]) -> dict`` of losses.

    Example:
        >>> model = maskformer(backbone="resnet50", num_classes=150, neck="fapn").eval()  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 512, 512)).shape  # doctest: +SKIP
        torch.Size([1, 150, 512, 512])
    """
    if neck not in ("fapn", "fpn"):
        raise ValueError(f"unknown neck {neck!r}; valid necks: ['fapn', 'fpn']")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    body = build_backbone(backbone, weights_backbone, strides=(4, 8, 16, 32), **(backbone_kwargs or {}))
    decoder = PixelDecoder(
        body.channels, conv_dim, mask_dim, norm, feature_alignment=neck == "fapn", deform_backend=deform_backend
    )
    predictor = TransformerPredictor(
        body.channels[-1], num_classes, hidden_dim, num_queries, nheads, dim_feedforward, dec_layers, dropout, mask_dim
    )
    criterion = MaskFormerLoss(num_classes, class_weight, mask_weight, dice_weight, no_object_weight)
    return MaskFormer(body, num_classes, decoder, predictor, criterion, deep_supervision, ignore_index)


@register_model()
def maskformer_fapn(
    backbone: str = "resnet50", num_classes: int = 150, weights_backbone: BackboneWeights = None, **kwargs: Any
) -> MaskFormer:
    """MaskFormer with the FaPN pixel decoder: :func:`maskformer` with ``neck="fapn"`` (same keyword arguments)."""
    return maskformer(backbone, num_classes, weights_backbone, neck="fapn", **kwargs)


@register_model()
def maskformer_fpn(
    backbone: str = "resnet50", num_classes: int = 150, weights_backbone: BackboneWeights = None, **kwargs: Any
) -> MaskFormer:
    """MaskFormer with its own FPN pixel decoder: :func:`maskformer` with ``neck="fpn"`` (same keyword arguments)."""
    return maskformer(backbone, num_classes, weights_backbone, neck="fpn", **kwargs)
