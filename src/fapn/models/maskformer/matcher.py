"""Hungarian matching of MaskFormer's predicted masks to the ground-truth segments of an image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HungarianMatcher", "pairwise_sigmoid_focal_cost", "pairwise_dice_cost"]


def pairwise_sigmoid_focal_cost(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Mean sigmoid focal loss of every prediction against every target mask.

    Args:
        logits: ``[Q, P]`` mask logits, ``P`` pixels each.
        targets: ``[M, P]`` binary masks (float).
        alpha, gamma: focal loss weights (RetinaNet's 0.25 and 2).

    Returns:
        ``[Q, M]``: entry ``(q, m)`` is the focal loss of prediction ``q`` against mask ``m``, averaged over pixels.
    """
    prob = logits.sigmoid()
    # Per pixel: the loss if the target is 1, and if it is 0; a matrix product then sums each pair.
    pos = (
        alpha
        * (1 - prob) ** gamma
        * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    )
    neg = (
        (1 - alpha)
        * prob**gamma
        * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    )
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """``1 - (2|p∩t| + 1) / (|p| + |t| + 1)`` of every prediction against every target mask (``p`` = sigmoid).

    Args:
        logits: ``[Q, P]`` mask logits.
        targets: ``[M, P]`` binary masks (float).

    Returns:
        ``[Q, M]`` dice losses.
    """
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth masks minimising a weighted cost (MaskFormer's matcher).

    ``cost = class_weight * (-p_q[c_m]) + mask_weight * focal(q, m) + dice_weight * dice(q, m)``, with ``p`` the
    softmax of the class logits (no-object included) and the target masks resized to the predicted masks' size
    with nearest interpolation. Solved exactly by ``scipy.optimize.linear_sum_assignment``; queries left
    unmatched are "no object".

    Args:
        class_weight: weight of the class cost (1 in MaskFormer).
        mask_weight: weight of the focal cost (20, the focal loss weight).
        dice_weight: weight of the dice cost (1).

    Example:
        >>> matcher = HungarianMatcher()
        >>> logits, masks = torch.randn(5, 4), torch.randn(5, 8, 8)  # 5 queries, 3 classes + no-object
        >>> labels, target = torch.tensor([2, 0]), torch.rand(2, 8, 8).round()
        >>> query, segment = matcher.match(logits, masks, labels, target)
        >>> len(query), sorted(segment.tolist())
        (2, [0, 1])
    """

    def __init__(self, class_weight: float = 1.0, mask_weight: float = 20.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("at least one of the matching costs must have a non-zero weight")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight

    @torch.no_grad()
    def cost_matrix(self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor) -> Tensor:
        """The ``[Q, M]`` matching cost of one image.

        Args:
            class_logits: ``[Q, K + 1]``.
            mask_logits: ``[Q, h, w]``.
            labels: ``[M]`` classes of the target segments.
            masks: ``[M, H, W]`` binary target masks (any size: resized to ``h x w``).
        """
        prob = class_logits.float().softmax(-1)
        cost_class = -prob[:, labels]
        target = masks[:, None].to(mask_logits.dtype)
        if target.shape[-2:] != mask_logits.shape[-2:]:
            target = F.interpolate(target, size=mask_logits.shape[-2:], mode="nearest")
        target = target.flatten(1).float()
        flat = mask_logits.flatten(1).float()
        return (
            self.class_weight * cost_class
            + self.mask_weight * pairwise_sigmoid_focal_cost(flat, target)
            + self.dice_weight * pairwise_dice_cost(flat, target)
        )

    @torch.no_grad()
    def match(self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Matched ``(query indices, segment indices)`` of one image, ``min(Q, M)`` pairs, sorted by query."""
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError as err:
            raise ImportError("MaskFormer's matching needs scipy: pip install 'fapn[maskformer]'") from err
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty
        cost = self.cost_matrix(class_logits, mask_logits, labels, masks).cpu()
        rows, cols = linear_sum_assignment(cost.numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    def forward(
        self, class_logits: Tensor, mask_logits: Tensor, labels: list[Tensor], masks: list[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match a batch.

        Args:
            class_logits: ``[N, Q, K + 1]``.
            mask_logits: ``[N, Q, h, w]``.
            labels: per image, ``[M_i]`` segment classes.
            masks: per image, ``[M_i, H, W]`` binary masks.

        Returns:
            per image, ``(query indices, segment indices)``.
        """
        return [self.match(c, m, lab, t) for c, m, lab, t in zip(class_logits, mask_logits, labels, masks)]
