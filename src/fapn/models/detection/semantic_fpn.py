"""Old import path of :mod:`fapn.models.semantic_fpn` (a semantic model, now filed under ``fapn.models``)."""

from fapn.models.semantic_fpn import (
    SemanticFPN,
    SemanticFPNHead,
    semantic_fpn,
    semantic_fpn_resnet50_fapn,
    semantic_fpn_resnet101_fapn,
)

__all__ = [
    "SemanticFPNHead",
    "SemanticFPN",
    "semantic_fpn",
    "semantic_fpn_resnet50_fapn",
    "semantic_fpn_resnet101_fapn",
]
