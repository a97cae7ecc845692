"""Boundary metric: mIoU over the trimap band within ``width`` pixels of a ground-truth label boundary.

Boundaries and thin objects are where FaPN claims its gain, and whole-image mIoU hides them behind large
regions. A pixel is in the band when the ground truth within its ``(2 * width + 1)`` square neighbourhood
holds more than one value (the ignore label counts as a value, so the edges of void regions are boundaries;
ignored pixels themselves are not scored). The IoU is then computed on band pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from fapn.metrics.segmentation import ConfusionMatrix, confusion_matrix

__all__ = ["boundary_band", "BoundaryConfusionMatrix", "DEFAULT_BOUNDARY_WIDTH"]

DEFAULT_BOUNDARY_WIDTH = 2
"""Band half-width in pixels used unless a recipe or ``--boundary-width`` says otherwise: ``fapn score``, the
recipes' ``eval.boundary_width`` and every boundary figure in the docs use this one value [ours]."""


def boundary_band(target: Tensor, width: int) -> Tensor:
    """Boolean mask ``[..., H, W]`` of pixels within ``width`` pixels (chessboard distance) of a label change.

    Example:
        >>> import torch
        >>> t = torch.tensor([[0, 0, 0, 1, 1, 1]])
        >>> boundary_band(t, 1).int()
        tensor([[0, 0, 1, 1, 0, 0]], dtype=torch.int32)
    """
    if width < 1:
        raise ValueError(f"boundary width must be at least 1 pixel, got {width}")
    shape = target.shape
    t = target.reshape(-1, 1, *shape[-2:]).double()
    k = 2 * width + 1
    # Replicate padding: the image border is not a boundary.
    padded = F.pad(t, (width, width, width, width), mode="replicate")
    high = F.max_pool2d(padded, k, stride=1)
    low = -F.max_pool2d(-padded, k, stride=1)
    return (high != low).reshape(shape)


class BoundaryConfusionMatrix(ConfusionMatrix):
    """Confusion matrix restricted to the boundary band (see :func:`boundary_band`); reduced across processes
    and scored as :class:`~fapn.metrics.segmentation.ConfusionMatrix`.

    Args:
        num_classes: number of classes.
        width: band half-width in pixels.
        ignore_index: ground-truth value to skip.
        class_names: names for the per-class scores.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = DEFAULT_BOUNDARY_WIDTH,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, ignore_index, class_names)
        self.width = width

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = pred.cpu(), target.cpu()
        band = boundary_band(target, self.width)
        self.matrix += confusion_matrix(pred[band], target[band], self.num_classes, self.ignore_index)
