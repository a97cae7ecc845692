"""A check that predictions and ground truth use the same class set, from their confusion matrix.

Saved predictions do not say how many classes their model had. A model trained with fewer classes than the
ground truth (an 8-class model scored against 11-class labels) never predicts the top classes, and its mIoU
silently counts them as zeros; predicted class ids above the ground truth's are refused by the scorers already.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["class_count_warning"]


def class_count_warning(matrix: Tensor, class_names: Sequence[str] | None = None) -> str | None:
    """A warning when the predictions never use the highest classes although the ground truth holds them, as
    a model trained with fewer classes does; ``None`` otherwise.

    Args:
        matrix: ``[K, K]`` or ``[K, K + 1]`` confusion counts, rows ground truth, columns predictions (see
            :func:`fapn.metrics.confusion_matrix`).
        class_names: names for the message.

    Example:
        >>> m = torch.zeros(4, 5, dtype=torch.int64)
        >>> m[0, 0] = m[1, 1] = m[3, 0] = 5  # class 3 never predicted
        >>> class_count_warning(m, ["a", "b", "c", "d"])[:60]
        'the predictions use classes 0..1 only, but the ground truth '
        >>> class_count_warning(torch.eye(3, dtype=torch.int64)) is None
        True
    """
    num_classes = matrix.shape[0]
    predicted = matrix[:, :num_classes].sum(dim=0) > 0
    in_ground_truth = matrix.sum(dim=1) > 0
    if not bool(predicted.any()):
        return None
    highest = int(torch.nonzero(predicted).max())
    missing = [c for c in range(highest + 1, num_classes) if bool(in_ground_truth[c])]
    if not missing:
        return None
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    shown = ", ".join(names[c] for c in missing[:6]) + (", ..." if len(missing) > 6 else "")
    return (
        f"the predictions use classes 0..{highest} only, but the ground truth has {num_classes} classes and holds "
        f"{len(missing)} of the ones above ({shown}): was the model trained with {highest + 1} classes instead of "
        f"{num_classes}? (If it merely never predicts them, ignore this.)"
    )
