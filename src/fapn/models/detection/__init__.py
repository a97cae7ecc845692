"""FaPN on torchvision's detectors: Faster/Mask R-CNN, RetinaNet, Panoptic FPN.

Switching from torchvision is one word: ``maskrcnn_resnet50_fpn(...)`` -> ``maskrcnn_resnet50_fapn(...)``. The
semantic FPN lives in :mod:`fapn.models.semantic_fpn` and the shared ResNet + neck pyramids in
:mod:`fapn.models.pyramid` (both re-exported here); the authors' key mappings in :mod:`fapn.convert`.
"""

from fapn.models.detection.builders import (
    DETECTORS,
    NECKS,
    build_detection_model,
    fasterrcnn_resnet50_fapn,
    fasterrcnn_resnet101_fapn,
    maskrcnn_resnet50_fapn,
    maskrcnn_resnet101_fapn,
    retinanet_resnet50_fapn,
    retinanet_resnet101_fapn,
)
from fapn.models.detection.detectron2 import CAFFE_RGB_MEAN, CAFFE_STD, detectron2_fapn_rcnn, detectron2_resnet
from fapn.models.detection.panoptic_fpn import (
    PanopticFPN,
    panoptic_fpn_resnet50_fapn,
    panoptic_fpn_resnet101_fapn,
    panoptic_merge,
)
from fapn.models.pyramid import (
    BackboneWithFaPN,
    freeze_resnet_layers,
    p6p7_from_c5,
    resnet_fapn_backbone,
    resnet_fapn_extractor,
    resnet_pyramid,
)
from fapn.models.semantic_fpn import (
    SemanticFPN,
    SemanticFPNHead,
    semantic_fpn,
    semantic_fpn_resnet50_fapn,
    semantic_fpn_resnet101_fapn,
)

__all__ = [
    "BackboneWithFaPN",
    "resnet_fapn_backbone",
    "resnet_fapn_extractor",
    "resnet_pyramid",
    "freeze_resnet_layers",
    "p6p7_from_c5",
    "fasterrcnn_resnet50_fapn",
    "fasterrcnn_resnet101_fapn",
    "maskrcnn_resnet50_fapn",
    "maskrcnn_resnet101_fapn",
    "retinanet_resnet50_fapn",
    "retinanet_resnet101_fapn",
    "DETECTORS",
    "NECKS",
    "build_detection_model",
    "detectron2_resnet",
    "detectron2_fapn_rcnn",
    "CAFFE_RGB_MEAN",
    "CAFFE_STD",
    "PanopticFPN",
    "panoptic_merge",
    "panoptic_fpn_resnet50_fapn",
    "panoptic_fpn_resnet101_fapn",
    "SemanticFPNHead",
    "SemanticFPN",
    "semantic_fpn",
    "semantic_fpn_resnet50_fapn",
    "semantic_fpn_resnet101_fapn",
]
