"""The authors' detectron2 PointRend checkpoints (semantic and Mask R-CNN, on FaPN) -> fapn's PointRend models.

Backbone, neck, RPN and box head go through :mod:`fapn.convert.detectron2`; the PointRend heads map as below.
Semantic (``pointrend_semantic_R_{50,101}_FAN_1x_cityscapes``, onto
:func:`~fapn.models.pointrend.detectron2_pointrend_semantic`, a :class:`~fapn.models.pointrend.PointRendSemanticFPN`):

===============================================================  =================================================
detectron2                                                       fapn
===============================================================  =================================================
``sem_seg_head.coarse_sem_seg_head.p{l}.{j}.weight``             ``coarse_head.scale_heads.{l-2}.{j}.0.weight``
``sem_seg_head.coarse_sem_seg_head.p{l}.{j}.norm.{weight,bias}`` ``coarse_head.scale_heads.{l-2}.{j}.1.*``
``sem_seg_head.coarse_sem_seg_head.predictor.*``                 ``coarse_head.predictor.*``
``sem_seg_head.point_head.{fc1,fc2,fc3,predictor}.*``            ``point_head.*`` (same names)
===============================================================  =================================================

(``j`` indexes detectron2's per-level ``Sequential`` of conv and upsampling modules, which ours mirrors.)

Instance (``pointrend_rcnn_R_50_FAN_1x_coco`` -> :func:`~fapn.models.pointrend.detectron2_pointrend_rcnn`), in every
layout detectron2's PointRend project has written [pointrend] (the authors' config names the first release's
``PointRendROIHeads`` + ``CoarseMaskHead``, which later detectron2 versions convert on load):

==========================  =================================================  ====================================
detectron2 release          coarse mask head / point head                       fapn
==========================  =================================================  ====================================
Jan 2020 - Nov 2020         ``roi_heads.mask_coarse_head.*``,                  ``roi_heads.mask_head.coarse_head.*``,
                            ``roi_heads.mask_point_head.*``                    ``roi_heads.mask_head.point_head.*``
Nov 2020 - Apr 2021         ``roi_heads.mask_head.coarse_head.*``,             same
                            ``roi_heads.mask_head.point_head.*``
Apr 2021 - (v0.4.1+)        same                                               same
==========================  =================================================  ====================================

Before April 2021 the coarse head's FC layers were ``coarse_mask_fc{k}``, now ``fc{k}`` (ours); the other names
(``reduce_spatial_dim_conv``, ``reduce_channel_dim_conv``, ``prediction``; ``fc{k}``, ``predictor`` in the point
head) never changed.

The heads predict the foreground classes only in both libraries (detectron2's ``NUM_CLASSES = 80``), so no row
is added or moved: tensors are copied unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from fapn.convert.detectron2 import convert_detectron2_rcnn

__all__ = ["convert_pointrend", "is_pointrend_checkpoint"]

_COARSE_SEM = re.compile(r"^sem_seg_head\.coarse_sem_seg_head\.p([2-9])\.(\d+)\.(weight|bias|norm\.weight|norm\.bias)$")
_COARSE_SEM_PREDICTOR = re.compile(r"^sem_seg_head\.coarse_sem_seg_head\.predictor\.(weight|bias)$")
_SEM_POINT = re.compile(r"^sem_seg_head\.point_head\.((?:fc\d+|predictor)\.(?:weight|bias))$")
_MASK_V2 = re.compile(r"^roi_heads\.mask_head\.((?:coarse_head|point_head)\..+)$")
_MASK_V1_COARSE = re.compile(r"^roi_heads\.mask_coarse_head\.(.+)$")
_MASK_V1_POINT = re.compile(r"^roi_heads\.mask_point_head\.(.+)$")
_V1_FC = re.compile(r"^coarse_head\.coarse_mask_fc(\d+)")


def is_pointrend_checkpoint(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a detectron2 state dict holds PointRend heads (semantic or instance, either layout)."""
    return any(
        key.startswith(
            (
                "sem_seg_head.point_head.",
                "roi_heads.mask_head.point_head.",
                "roi_heads.mask_head.coarse_head.",
                "roi_heads.mask_point_head.",
                "roi_heads.mask_coarse_head.",
            )
        )
        for key in state_dict
    )


def _semantic_head_key(key: str) -> str | None:
    if match := _COARSE_SEM.match(key):
        level, index, leaf = match.groups()
        module = "1" if leaf.startswith("norm.") else "0"
        return f"coarse_head.scale_heads.{int(level) - 2}.{index}.{module}.{leaf.removeprefix('norm.')}"
    if match := _COARSE_SEM_PREDICTOR.match(key):
        return f"coarse_head.predictor.{match[1]}"
    if match := _SEM_POINT.match(key):
        return f"point_head.{match[1]}"
    return None


def _mask_head_key(key: str) -> str | None:
    if match := _MASK_V2.match(key):
        local = match[1]
    elif match := _MASK_V1_COARSE.match(key):
        local = f"coarse_head.{match[1]}"
    elif match := _MASK_V1_POINT.match(key):
        local = f"point_head.{match[1]}"
    else:
        return None
    return "roi_heads.mask_head." + _V1_FC.sub(r"coarse_head.fc\1", local)


def convert_pointrend(state_dict: Mapping[str, Tensor], **kwargs: Any) -> tuple[dict[str, Tensor], list[str]]:
    """Map an authors' PointRend checkpoint (FaPN neck) onto
    :func:`~fapn.models.pointrend.detectron2_pointrend_semantic` (semantic) or
    :func:`~fapn.models.pointrend.detectron2_pointrend_rcnn` (Mask R-CNN, either mask-head layout).

    The PointRend heads are mapped here (see the module docstring), everything else (ResNet, neck, RPN, box
    head) by :func:`fapn.convert.detectron2.convert_detectron2_rcnn`, which gets ``**kwargs`` (``stages``, ...).

    Returns:
        ``(mapped, unmapped)``: a state dict for the model, and the source keys nothing maps (``pixel_mean``,
        ...) in input order.

    Example:
        >>> import torch
        >>> mapped, _ = convert_pointrend({"roi_heads.mask_coarse_head.coarse_mask_fc1.weight": torch.zeros(1)})
        >>> list(mapped)
        ['roi_heads.mask_head.coarse_head.fc1.weight']
    """
    heads: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        target = _semantic_head_key(key) or _mask_head_key(key)
        if target is None:
            rest[key] = value
        else:
            heads[target] = value
    mapped, unmapped = convert_detectron2_rcnn(rest, **kwargs) if rest else ({}, [])
    mapped.update(heads)
    return mapped, unmapped
