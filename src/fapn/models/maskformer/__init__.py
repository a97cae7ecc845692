"""MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) with the FPN or the FaPN pixel decoder.

Example:
    >>> from fapn.models import get_model
    >>> model = get_model("maskformer_fapn", backbone="resnet50", num_classes=150)  # doctest: +SKIP
"""

from fapn.models.maskformer.builders import maskformer, maskformer_fapn, maskformer_fpn
from fapn.models.maskformer.criterion import MaskFormerLoss, dice_loss, semantic_to_segments, sigmoid_focal_loss
from fapn.models.maskformer.matcher import HungarianMatcher, pairwise_dice_cost, pairwise_sigmoid_focal_cost
from fapn.models.maskformer.model import MaskFormer, semantic_inference
from fapn.models.maskformer.pixel_decoder import PixelDecoder
from fapn.models.maskformer.transformer_decoder import (
    MLP,
    PositionEmbeddingSine,
    TransformerDecoderLayer,
    TransformerPredictor,
)

__all__ = [
    "MaskFormer",
    "maskformer_fapn",
    "maskformer_fpn",
    "maskformer",
    "PixelDecoder",
    "TransformerPredictor",
    "TransformerDecoderLayer",
    "PositionEmbeddingSine",
    "MLP",
    "MaskFormerLoss",
    "HungarianMatcher",
    "semantic_to_segments",
    "semantic_inference",
    "sigmoid_focal_loss",
    "dice_loss",
    "pairwise_sigmoid_focal_cost",
    "pairwise_dice_cost",
]
