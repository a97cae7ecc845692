"""Converting the authors' detectron2 FaPN checkpoints to fapn's modules: every key mapping of the library.

:mod:`.detectron2` maps ResNet, neck and R-CNN heads, :mod:`.pointrend` the PointRend heads (and hands the rest to
:mod:`.detectron2`); :func:`convert_detectron2_fapn` here picks between them by the checkpoint's keys.

Example:
    >>> from fapn.convert import load_detectron2_checkpoint, convert_detectron2_fapn
    >>> state = load_detectron2_checkpoint("faster_rcnn_R_50_FPN_1x_fapn.pth")  # doctest: +SKIP
    >>> mapped, unmapped = convert_detectron2_fapn(state)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from fapn.convert.detectron2 import (
    convert_detectron2_rcnn,
    convert_detectron2_resnet,
    convert_fapn_neck,
    load_detectron2_checkpoint,
    neck_stages,
)
from fapn.convert.pointrend import convert_pointrend, is_pointrend_checkpoint

__all__ = [
    "load_detectron2_checkpoint",
    "convert_fapn_neck",
    "convert_detectron2_resnet",
    "convert_detectron2_fapn",
    "convert_detectron2_fapn_rcnn",
    "neck_stages",
]


def convert_detectron2_fapn(
    state_dict: Mapping[str, Tensor],
    neck_prefix: str = "backbone.fapn.",
    body_prefix: str = "backbone.body.",
    stages: Sequence[int] | None = None,
) -> tuple[dict[str, Tensor], list[str]]:
    """A whole detectron2 FaPN checkpoint mapped onto fapn's models: PointRend checkpoints (semantic or Mask
    R-CNN) through :func:`fapn.convert.pointrend.convert_pointrend`, every other one through
    :func:`fapn.convert.detectron2.convert_detectron2_rcnn` (ResNet body, neck, R-CNN heads).

    Args:
        state_dict: the authors' model state dict (the checkpoint's ``"model"`` entry).
        neck_prefix: prefix of our neck's keys in the target model (``BackboneWithFaPN``: ``backbone.fapn.``).
        body_prefix: prefix of the ResNet's keys (``backbone.body.``).
        stages: the neck's input stages, see :func:`convert_fapn_neck`.

    Returns:
        ``(mapped, unmapped)``: target keys -> tensors, and every source key that was not mapped (``pixel_mean``,
        RetinaNet's head, ...), in input order. A Faster/Mask R-CNN checkpoint maps onto
        ``detectron2_fapn_rcnn(depth, mask=..., num_classes=K + 1)`` exactly.

    Example:
        >>> import torch
        >>> mapped, unmapped = convert_detectron2_fapn({"pixel_mean": torch.zeros(3, 1, 1)})
        >>> mapped, unmapped
        ({}, ['pixel_mean'])
    """
    convert = convert_pointrend if is_pointrend_checkpoint(state_dict) else convert_detectron2_rcnn
    return convert(state_dict, neck_prefix=neck_prefix, body_prefix=body_prefix, stages=stages)


def convert_detectron2_fapn_rcnn(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The authors' Faster/Mask R-CNN FaPN checkpoint onto :func:`fapn.models.detection.detectron2_fapn_rcnn`:
    :func:`convert_detectron2_fapn` with its defaults."""
    return convert_detectron2_fapn(state_dict)
