"""Models: the real-time segmentation FaPN and backbones."""

from fapn.models.backbones import RESNETS, load_resnet_weights, resnet_body
from fapn.models.registry import get_model, get_model_builder, list_models, register_model
from fapn.models.realtime import BACKBONES, VARIANTS, RealtimeFaPN, SegmentationHead, realtime_fapn

import fapn.models.maskformer  # noqa: E402,F401  (registers maskformer_fapn and maskformer_fpn)

__all__ = [
    "get_model",
    "get_model_builder",
    "list_models",
    "register_model",
    "realtime_fapn",
    "RealtimeFaPN",
    "SegmentationHead",
    "VARIANTS",
    "BACKBONES",
    "resnet_body",
    "load_resnet_weights",
    "RESNETS",
]
