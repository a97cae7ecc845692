"""Evaluation metrics: semantic segmentation (mIoU, accuracies, boundary mIoU)."""

from fapn.metrics.boundary import DEFAULT_BOUNDARY_WIDTH, BoundaryConfusionMatrix, boundary_band
from fapn.metrics.class_count import class_count_warning
from fapn.metrics.segmentation import ConfusionMatrix, confusion_matrix, format_table, scores_from_confusion

__all__ = [
    "BoundaryConfusionMatrix",
    "DEFAULT_BOUNDARY_WIDTH",
    "ConfusionMatrix",
    "boundary_band",
    "class_count_warning",
    "confusion_matrix",
    "format_table",
    "scores_from_confusion",
]
