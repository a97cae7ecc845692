"""Evaluation metrics: semantic segmentation (mIoU, accuracies, boundary mIoU)."""

from fapn.metrics.boundary import BoundaryConfusionMatrix, boundary_band
from fapn.metrics.segmentation import ConfusionMatrix, confusion_matrix, format_table, scores_from_confusion

__all__ = [
    "BoundaryConfusionMatrix",
    "ConfusionMatrix",
    "boundary_band",
    "confusion_matrix",
    "format_table",
    "scores_from_confusion",
]
