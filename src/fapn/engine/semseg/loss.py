"""The semantic segmentation losses: cross-entropy with the ignore index, optionally on OHEM's hard pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fapn.runtime import all_reduce_sum

__all__ = ["segmentation_loss", "ohem_targets"]


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    ignore_index: int,
    class_weights: Tensor | None = None,
    world_size: int = 1,
) -> Tensor:
    """Pixel cross-entropy normalised by the (weighted) number of labelled pixels of the *global* batch,
    times ``world_size``: DDP's gradient averaging then yields exactly the single-process gradient, however
    the ignored pixels are spread over the processes."""
    loss_sum = F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if class_weights is None:
        weight_sum = valid.sum().to(torch.float32)
    else:
        weight_sum = class_weights[target[valid]].sum().to(torch.float32)
    weight_sum = all_reduce_sum(weight_sum.detach())
    return loss_sum * world_size / weight_sum.clamp(min=1.0)


def ohem_targets(logits: Tensor, target: Tensor, ignore_index: int, thresh: float, min_kept: int) -> Tensor:
    """Online hard example mining (OHEM) over pixels: ``target`` with the easy pixels set to ``ignore_index``.

    A labelled pixel is hard when the predicted probability of its true class is at most ``max(thresh, p_k)``,
    where ``p_k`` is the ``min_kept``-th smallest such probability in the batch: so at least ``min_kept``
    pixels (all labelled ones if fewer) are kept however confident the model is. This is the OHEM of
    BiSeNet and mmsegmentation's ``OHEMPixelSampler`` (threshold 0.7 there).

    Args:
        logits: ``[N, C, H, W]``.
        target: ``[N, H, W]`` class indices with ``ignore_index``.
        thresh: probability below which a pixel is always hard.
        min_kept: pixels kept at least, per call.

    Example:
        >>> logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.0]]]])  # 2 classes, 1x2 pixels
        >>> ohem_targets(logits, torch.tensor([[[0, 0]]]), 255, thresh=0.7, min_kept=1).tolist()
        [[[255, 0]]]
    """
    with torch.no_grad():
        valid = target != ignore_index
        if not valid.any():
            return target
        probs = logits.detach().float().softmax(dim=1)
        true_prob = probs.gather(1, target.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        valid_probs = true_prob[valid]
        threshold = thresh
        if valid_probs.numel() > min_kept > 0:
            kth = valid_probs.kthvalue(min_kept).values.item()
            threshold = max(thresh, kth)
        hard = valid & (true_prob <= threshold)
        return torch.where(hard, target, torch.full_like(target, ignore_index))
