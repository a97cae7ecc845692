"""PointRend (Kirillov, Wu, He, Girshick, CVPR 2020) on FaPN: semantic segmentation and Mask R-CNN.

The paper's Cityscapes semantic model and the supplementary's Figure 2 instance model both use PointRend's heads
on the FaPN neck; detectron2's PointRend project is the reference for every detail ([pointrend] in
docs/architecture.md).
"""

from fapn.models.pointrend.builders import (
    pointrend_maskrcnn_resnet50_fapn,
    pointrend_maskrcnn_resnet50_fpn,
    pointrend_semantic,
    pointrend_semantic_resnet50_fapn,
    pointrend_semantic_resnet50_fpn,
    pointrend_semantic_resnet101_fapn,
    pointrend_semantic_resnet101_fpn,
)
from fapn.models.pointrend.coarse_mask_head import CoarseMaskHead
from fapn.models.pointrend.detectron2 import (
    DETECTRON2_SEMANTIC_MEAN,
    DETECTRON2_SEMANTIC_STD,
    detectron2_pointrend_rcnn,
    detectron2_pointrend_semantic,
)
from fapn.models.pointrend.mask_rcnn import PointRendMaskHead, PointRendMaskRCNN, PointRendRoIHeads
from fapn.models.pointrend.point_features import (
    boxes_points_to_image,
    mask_uncertainty,
    point_sample,
    regular_grid_points,
    roi_point_features,
    semantic_uncertainty,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from fapn.models.pointrend.point_head import StandardPointHead
from fapn.models.pointrend.semantic import PointRendSemanticFPN, masked_cross_entropy

__all__ = [
    "point_sample",
    "regular_grid_points",
    "uncertain_points_with_randomness",
    "uncertain_points_on_grid",
    "semantic_uncertainty",
    "mask_uncertainty",
    "boxes_points_to_image",
    "roi_point_features",
    "StandardPointHead",
    "CoarseMaskHead",
    "PointRendSemanticFPN",
    "masked_cross_entropy",
    "PointRendMaskHead",
    "PointRendRoIHeads",
    "PointRendMaskRCNN",
    "pointrend_semantic",
    "pointrend_semantic_resnet50_fapn",
    "pointrend_semantic_resnet101_fapn",
    "pointrend_semantic_resnet50_fpn",
    "pointrend_semantic_resnet101_fpn",
    "pointrend_maskrcnn_resnet50_fapn",
    "pointrend_maskrcnn_resnet50_fpn",
    "detectron2_pointrend_semantic",
    "detectron2_pointrend_rcnn",
    "DETECTRON2_SEMANTIC_MEAN",
    "DETECTRON2_SEMANTIC_STD",
]
