"""Models: the real-time FaPN, the semantic FPN, FaPN on torchvision's detectors, and the registry naming them all.

Importing this package imports every builder module, so every builder is registered:
``fapn.models.list_models()`` names them, ``fapn.models.get_model(name, **kwargs)`` builds one.
"""

# imported for their side effect: registering the detection, MaskFormer and PointRend builders
import fapn.models.detection
import fapn.models.maskformer
import fapn.models.pointrend  # noqa: F401  (one `fapn` binding for the three imports above)
from fapn.models.backbones import RESNETS, load_resnet_weights, resnet_body
from fapn.models.realtime import BACKBONES, NECKS, RealtimeFaPN, SegmentationHead, realtime_fapn
from fapn.models.registry import get_model, get_model_builder, list_models, register_model
from fapn.models.semantic_fpn import (
    SemanticFPN,
    SemanticFPNHead,
    semantic_fpn,
    semantic_fpn_resnet50_fapn,
    semantic_fpn_resnet101_fapn,
)

__all__ = [
    "get_model",
    "get_model_builder",
    "list_models",
    "register_model",
    "realtime_fapn",
    "RealtimeFaPN",
    "SegmentationHead",
    "NECKS",
    "BACKBONES",
    "semantic_fpn",
    "semantic_fpn_resnet50_fapn",
    "semantic_fpn_resnet101_fapn",
    "SemanticFPN",
    "SemanticFPNHead",
    "resnet_body",
    "load_resnet_weights",
    "RESNETS",
]
