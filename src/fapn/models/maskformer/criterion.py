"""MaskFormer's set prediction loss: class cross-entropy with a down-weighted no-object class, sigmoid focal and
dice losses on the matched masks, summed over the decoder layers (deep supervision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.models.maskformer.matcher import HungarianMatcher

__all__ = ["MaskFormerLoss", "semantic_to_segments", "sigmoid_focal_loss", "dice_loss"]


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Focal loss of matched mask pairs, averaged over pixels, summed over masks, divided by ``num_masks``.

    Args:
        logits: ``[M, P]`` mask logits.
        targets: ``[M, P]`` binary masks (float).
        num_masks: normaliser (the number of target masks in the batch).
        alpha, gamma: RetinaNet's weights.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """``sum_m (1 - (2|p∩t| + 1) / (|p| + |t| + 1)) / num_masks`` over matched pairs (``p`` = sigmoid)."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def semantic_to_segments(target: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """One segment per class present in a semantic map (MaskFormer's semantic dataset mapper).

    Args:
        target: ``[H, W]`` class indices with ``ignore_index``.
        ignore_index: label of unlabelled pixels: they belong to no segment (so every mask is 0 there).

    Returns:
        ``labels [M]`` (sorted classes) and ``masks [M, H, W]`` (bool).

    Example:
        >>> labels, masks = semantic_to_segments(torch.tensor([[0, 2], [255, 2]]))
        >>> labels.tolist(), masks.int().tolist()
        ([0, 2], [[[1, 0], [0, 0]], [[0, 1], [0, 1]]])
    """
    labels = torch.unique(target)
    labels = labels[labels != ignore_index]
    return labels, target[None] == labels[:, None, None]


def _num_masks(count: int, device: torch.device) -> float:
    # Average over processes, as MaskFormer does, so every process normalises by the same number.
    total = torch.tensor([float(count)], device=device)
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        world = torch.distributed.get_world_size()
    return max(total.item() / world, 1.0)


class MaskFormerLoss(nn.Module):
    """The loss of MaskFormer (its ``SetCriterion`` with ``losses=["labels", "masks"]``).

    For every decoder layer's prediction (the last and, with deep supervision, the intermediate ones), the
    queries are matched to the segments by :class:`HungarianMatcher` (independently per layer); then

    * ``loss_ce``: cross-entropy of all ``Q`` queries' class logits, unmatched ones against "no object"
      (index ``num_classes``) whose weight is ``no_object_weight``; the mean is weighted, as
      ``F.cross_entropy(weight=...)`` computes it;
    * ``loss_mask``: sigmoid focal loss of the matched masks, upsampled bilinearly to the targets' size;
    * ``loss_dice``: dice loss of the same pairs;

    both mask losses summed over pairs and divided by the number of target masks in the batch. Each is
    multiplied by its weight; intermediate layers' losses get the suffix ``_0``, ``_1``, ...

    Args:
        num_classes: ``K`` (without no-object).
        class_weight, mask_weight, dice_weight: loss weights (1, 20, 1 in MaskFormer); also the matcher's costs.
        no_object_weight: cross-entropy weight of the no-object class (0.1).

    Example:
        >>> loss = MaskFormerLoss(num_classes=3)
        >>> class_logits, mask_logits = torch.randn(2, 1, 5, 4), torch.randn(2, 1, 5, 8, 8)  # 2 layers, N=1
        >>> labels, masks = [torch.tensor([0, 2])], [torch.rand(2, 32, 32) > 0.5]
        >>> sorted(loss(class_logits, mask_logits, labels, masks))
        ['loss_ce', 'loss_ce_0', 'loss_dice', 'loss_dice_0', 'loss_mask', 'loss_mask_0']
    """

    empty_weight: Tensor

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def layer_losses(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        labels: list[Tensor],
        masks: list[Tensor],
        num_masks: float,
    ) -> dict[str, Tensor]:
        """The three unweighted losses of one decoder layer's prediction ``[N, Q, K+1]``, ``[N, Q, h, w]``."""
        indices = self.matcher(class_logits, mask_logits, labels, masks)
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(class_logits.device)
        query_idx = torch.cat([q for q, _ in indices]).to(class_logits.device)

        target_classes = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.int64, device=class_logits.device
        )
        target_classes[batch_idx, query_idx] = torch.cat(
            [lab[s.to(lab.device)] for lab, (_, s) in zip(labels, indices)]
        ).to(class_logits.device)
        loss_ce = F.cross_entropy(
            class_logits.float().transpose(1, 2), target_classes, self.empty_weight.to(class_logits.device)
        )

        matched = mask_logits[batch_idx, query_idx]
        if matched.shape[0] == 0:  # no labelled pixel in the whole batch: nothing to match
            zero = mask_logits.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        target = torch.cat([m[s.to(m.device)] for m, (_, s) in zip(masks, indices)]).to(matched.device)
        matched = F.interpolate(matched[:, None].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)[
            :, 0
        ].flatten(1)
        target = target.flatten(1).to(matched.dtype)
        return {
            "loss_ce": loss_ce,
            "loss_mask": sigmoid_focal_loss(matched, target, num_masks),
            "loss_dice": dice_loss(matched, target, num_masks),
        }

    def forward(
        self, class_logits: Tensor, mask_logits: Tensor, labels: list[Tensor], masks: list[Tensor]
    ) -> dict[str, Tensor]:
        """Weighted losses of every decoder layer.

        Args:
            class_logits: ``[L, N, Q, K + 1]``, the last layer last.
            mask_logits: ``[L, N, Q, h, w]``.
            labels: per image, ``[M_i]`` segment classes.
            masks: per image, ``[M_i, H, W]`` binary masks, all the same ``H x W``.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice`` of the last layer and ``loss_*_{i}`` of layer ``i``.
        """
        num_masks = _num_masks(sum(len(lab) for lab in labels), class_logits.device)
        losses: dict[str, Tensor] = {}
        layers = class_logits.shape[0]
        for layer in range(layers):
            suffix = "" if layer == layers - 1 else f"_{layer}"
            for key, value in self.layer_losses(
                class_logits[layer], mask_logits[layer], labels, masks, num_masks
            ).items():
                losses[key + suffix] = value * self.weights[key]
        return losses
