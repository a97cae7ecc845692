"""MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) for semantic segmentation: mask classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.models.inputs import padded_images, padded_targets
from fapn.models.maskformer.criterion import MaskFormerLoss, semantic_to_segments
from fapn.models.maskformer.pixel_decoder import PixelDecoder
from fapn.models.maskformer.transformer_decoder import TransformerPredictor

__all__ = ["MaskFormer", "semantic_inference"]


def semantic_inference(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """MaskFormer's semantic inference: ``sum_q softmax(class_q)[:K] * sigmoid(mask_q)`` per pixel.

    Args:
        class_logits: ``[N, Q, K + 1]`` (the last class is "no object", dropped after the softmax).
        mask_logits: ``[N, Q, H, W]``.

    Returns:
        per-class scores ``[N, K, H, W]`` (argmax gives the labels).
    """
    probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("nqk,nqhw->nkhw", probs, mask_logits.sigmoid())


class MaskFormer(nn.Module):
    """Backbone + pixel decoder + transformer predictor; trained with Hungarian matching, evaluated by combining
    class probabilities and masks.

    The image is zero-padded at the bottom and right to a multiple of ``size_divisibility`` (32, MaskFormer's
    ``SIZE_DIVISIBILITY``) and the scores cropped back, so any input size works. Use :func:`maskformer_fapn` or
    :func:`maskformer_fpn` to build one.

    Training (``model.train()``, the engine's ``computes_loss`` contract): ``model(images, targets)`` with
    ``targets [N, H, W]`` class indices; each image's segments are one mask per class present
    (``ignore_index`` pixels and the padding are in none), and the result is the dict of weighted losses of
    :class:`MaskFormerLoss`, to be summed. Evaluation: ``model(images)`` returns per-class scores
    ``[N, num_classes, H, W]`` (not logits: sums of probabilities; their argmax is the prediction).

    Args:
        backbone: body returning an ``OrderedDict`` of maps at strides 4, 8, 16, 32 (see
            :func:`fapn.models.backbones.build_backbone`), with a ``channels`` attribute.
        num_classes: ``K``.
        pixel_decoder: per-pixel embeddings from the four maps.
        predictor: the transformer decoder on the stride-32 map.
        criterion: the training loss.
        deep_supervision: supervise every decoder layer (MaskFormer: yes), else only the last.
        ignore_index: unlabelled pixels in the targets.
        size_divisibility: pad the input to a multiple of this.
    """

    computes_loss = True

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pixel_decoder: PixelDecoder,
        predictor: TransformerPredictor,
        criterion: MaskFormerLoss,
        deep_supervision: bool = True,
        ignore_index: int = 255,
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.criterion = criterion
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.ignore_index = ignore_index
        self.size_divisibility = size_divisibility

    def predict_masks(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every decoder layer's class logits ``[L, N, Q, K+1]`` and mask logits ``[L, N, Q, H/4, W/4]`` for a
        padded batch."""
        features = list(self.backbone(images).values())
        mask_features = self.pixel_decoder(features)
        return self.predictor(features[-1], mask_features)

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        """Args:
            images: normalised ``[N, 3, H, W]``.
            targets: ``[N, H, W]`` class indices with ``ignore_index``; required in training mode.

        Returns:
            training: ``{"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", ...}``; evaluation: scores
            ``[N, num_classes, H, W]``.
        """
        height, width = images.shape[-2:]
        x = padded_images(images, self, self.size_divisibility)
        if self.training:
            targets = padded_targets(targets, images, self.size_divisibility, self.ignore_index, "MaskFormer")
            labels, masks = zip(*(semantic_to_segments(t, self.ignore_index) for t in targets))
            too_large = [int(lab.max()) for lab in labels if lab.numel() and int(lab.max()) >= self.num_classes]
            if too_large:
                raise ValueError(
                    f"target class {max(too_large)} is out of range for {self.num_classes} classes "
                    f"(labels must be 0..{self.num_classes - 1} or the ignore index {self.ignore_index})"
                )
            class_logits, mask_logits = self.predict_masks(x)
            if not self.deep_supervision:
                class_logits, mask_logits = class_logits[-1:], mask_logits[-1:]
            return self.criterion(class_logits, mask_logits, list(labels), list(masks))
        class_logits, mask_logits = self.predict_masks(x)
        full_size = F.interpolate(mask_logits[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return semantic_inference(class_logits[-1], full_size)[..., :height, :width]
