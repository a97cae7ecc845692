"""detectron2-style ResNet and the key mapping for the authors' released detection checkpoints.

The authors trained on detectron2 with MSRA's caffe ResNets: the stride of each down-sampling bottleneck is in
its first 1x1 conv (``STRIDE_IN_1X1: True``), batch norm is frozen, and images enter as BGR 0-255 minus
``[103.53, 116.28, 123.675]`` with std 1. Here that body is a torchvision ``ResNet`` with the strides moved and
``FrozenBatchNorm2d``, so everything built for torchvision ResNets (``BackboneWithFaPN``, freezing) works on
it unchanged. The BGR input is folded into the weights: :func:`convert_detectron2_resnet` reverses the input
channels of the stem conv, so the model takes RGB, and torchvision's ``GeneralizedRCNNTransform`` does the caffe
normalisation with ``image_mean = CAFFE_RGB_MEAN / 255`` and ``image_std = 1 / 255`` (it scales images in
``[0, 1]``). Both foldings are exact.

Key mapping, detectron2 (authors' checkpoint, prefix ``backbone.bottom_up.``) -> here (``backbone.body.``):

=====================================  ==========================================
``stem.conv1.weight``                  ``conv1.weight`` (input channels reversed)
``stem.conv1.norm.{w,b,mean,var}``     ``bn1.*``
``res{s}.{i}.conv{k}.weight``          ``layer{s-1}.{i}.conv{k}.weight``
``res{s}.{i}.conv{k}.norm.*``          ``layer{s-1}.{i}.bn{k}.*``
``res{s}.{i}.shortcut.weight``         ``layer{s-1}.{i}.downsample.0.weight``
``res{s}.{i}.shortcut.norm.*``         ``layer{s-1}.{i}.downsample.1.*``
=====================================  ==========================================

and for the rest of a Faster/Mask R-CNN FaPN checkpoint (:func:`convert_detectron2_fapn_rcnn`):

==============================================  ================================================
``backbone.fan_align5.*``                       ``backbone.fapn.top_lateral.*``
``backbone.fan_align{l}.lateral_conv.conv_atten``  ``backbone.fapn.merges.{l-2}.lateral.attention``
``backbone.fan_align{l}.lateral_conv.conv``     ``backbone.fapn.merges.{l-2}.lateral.projection``
``backbone.fan_align{l}.offset``                ``backbone.fapn.merges.{l-2}.offset_fuse``
``backbone.fan_align{l}.dcpack_L2.{weight,bias}``  ``backbone.fapn.merges.{l-2}.deform.*``
``backbone.fan_align{l}.dcpack_L2.conv_offset_mask``  ``backbone.fapn.merges.{l-2}.offset_mask``
``backbone.fpn_output{l}``                      ``backbone.fapn.output_convs.{l-2}``
``proposal_generator.rpn_head.conv``            ``rpn.head.conv.0.0``
``proposal_generator.rpn_head.objectness_logits``  ``rpn.head.cls_logits``
``proposal_generator.rpn_head.anchor_deltas``   ``rpn.head.bbox_pred``
``roi_heads.box_head.fc1`` / ``fc2``            ``roi_heads.box_head.fc6`` / ``fc7``
``roi_heads.box_predictor.cls_score``           same name; background row moved from last to first
``roi_heads.box_predictor.bbox_pred``           same name; 4 zero rows prepended for background
``roi_heads.mask_head.mask_fcn{k}``             ``roi_heads.mask_head.{k-1}.0``
``roi_heads.mask_head.deconv``                  ``roi_heads.mask_predictor.conv5_mask``
``roi_heads.mask_head.predictor``               ``roi_heads.mask_predictor.mask_fcn_logits``; zero row prepended
==============================================  ================================================

Remaining behavioural differences between torchvision's heads and detectron2's (not weights; see
docs/detection.md): torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False`` and ``sampling_ratio=2``
(detectron2: ``ROIAlignV2``, ``aligned=True``, sampling ratio 0), and torchvision rounds its base anchors.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import misc as misc_nn_ops

from fapn.models.detection.backbone import resnet_fapn_extractor

__all__ = [
    "CAFFE_RGB_MEAN",
    "CAFFE_STD",
    "detectron2_resnet",
    "convert_detectron2_resnet",
    "convert_detectron2_fapn_rcnn",
    "detectron2_fapn_rcnn",
]

CAFFE_RGB_MEAN = (123.675, 116.28, 103.53)
"""detectron2's ``PIXEL_MEAN`` ``[103.53, 116.28, 123.675]`` (BGR) in RGB order, on the 0-255 scale."""
CAFFE_STD = (1.0, 1.0, 1.0)
"""detectron2's ``PIXEL_STD`` for the MSRA caffe ResNets, on the 0-255 scale."""

_DEPTHS = {50: resnet.resnet50, 101: resnet.resnet101, 152: resnet.resnet152}


def detectron2_resnet(
    depth: int = 50,
    *,
    stride_in_1x1: bool = True,
    norm_layer: type[nn.Module] = misc_nn_ops.FrozenBatchNorm2d,
) -> resnet.ResNet:
    """A torchvision ResNet laid out as detectron2's ``build_resnet_backbone`` for the MSRA weights.

    Args:
        depth: 50, 101 or 152.
        stride_in_1x1: put each down-sampling stride in the first 1x1 conv of the bottleneck (caffe/MSRA
            weights, the authors' checkpoints) rather than in the 3x3 conv (torchvision, ``False``).
        norm_layer: ``FrozenBatchNorm2d`` as in detectron2's ``FrozenBN``.

    Example:
        >>> body = detectron2_resnet(50)
        >>> body.layer2[0].conv1.stride, body.layer2[0].conv2.stride
        ((2, 2), (1, 1))
    """
    if depth not in _DEPTHS:
        raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth}")
    model = _DEPTHS[depth](weights=None, norm_layer=norm_layer)
    if stride_in_1x1:
        for stage in (model.layer2, model.layer3, model.layer4):
            block = stage[0]
            stride = block.conv2.stride
            block.conv1.stride, block.conv2.stride = stride, (1, 1)
    return model


_STEM = re.compile(r"^stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))$")
_BLOCK = re.compile(
    r"^res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.(?:weight|bias|running_mean|running_var))$"
)


def convert_detectron2_resnet(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Map a detectron2 ResNet state dict onto :func:`detectron2_resnet` (torchvision names).

    Accepts keys with or without the ``backbone.bottom_up.`` prefix (the authors' whole checkpoints pass
    through: the keys that are not ResNet keys come back as unmapped). The stem conv's input channels are
    reversed (detectron2 reads BGR, this body RGB).

    Args:
        state_dict: detectron2 names, e.g. ``res2.0.conv1.norm.running_mean``.

    Returns:
        ``(mapped, unmapped)``: a state dict for ``detectron2_resnet(...)`` (load it with ``strict=False``:
        it has no ``fc``), and the input keys that are not ResNet body keys, in input order.

    Example:
        >>> mapped, unmapped = convert_detectron2_resnet(checkpoint["model"])  # doctest: +SKIP
        >>> model.backbone.body.load_state_dict(mapped)  # doctest: +SKIP
    """
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        name = key.removeprefix("backbone.bottom_up.")
        if match := _STEM.match(name):
            if match.group(1) == "weight":
                mapped["conv1.weight"] = value.flip(1)  # BGR -> RGB input channels
            else:
                mapped[f"bn1.{match.group(2)}"] = value
        elif match := _BLOCK.match(name):
            stage, index, conv, leaf = match.groups()
            prefix = f"layer{int(stage) - 1}.{index}"
            if conv == "shortcut":
                module = "downsample.0" if leaf == "weight" else "downsample.1"
            else:
                module = conv if leaf == "weight" else f"bn{conv[-1]}"
            mapped[f"{prefix}.{module}.{leaf.removeprefix('norm.')}"] = value
        else:
            unmapped.append(key)
    return mapped, unmapped


_SIMPLE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\.fan_align5\.(weight|bias)$"), r"backbone.fapn.top_lateral.\1"),
    (re.compile(r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$"), r"rpn.head.cls_logits.\1"),
    (re.compile(r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$"), r"rpn.head.bbox_pred.\1"),
    (re.compile(r"^roi_heads\.box_head\.fc1\.(weight|bias)$"), r"roi_heads.box_head.fc6.\1"),
    (re.compile(r"^roi_heads\.box_head\.fc2\.(weight|bias)$"), r"roi_heads.box_head.fc7.\1"),
    (re.compile(r"^roi_heads\.mask_head\.deconv\.(weight|bias)$"), r"roi_heads.mask_predictor.conv5_mask.\1"),
]
_LEVEL_PARTS = {
    "lateral_conv.conv_atten.weight": "lateral.attention.weight",
    "lateral_conv.conv.weight": "lateral.projection.weight",
    "offset.weight": "offset_fuse.weight",
    "dcpack_L2.weight": "deform.weight",
    "dcpack_L2.bias": "deform.bias",
    "dcpack_L2.conv_offset_mask.weight": "offset_mask.weight",
    "dcpack_L2.conv_offset_mask.bias": "offset_mask.bias",
}
_FAN_ALIGN = re.compile(r"^backbone\.fan_align([2-4])\.(.+)$")
_FPN_OUTPUT = re.compile(r"^backbone\.fpn_output([2-4])\.(weight|bias)$")
_MASK_FCN = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$")


def _background_first(value: Tensor) -> Tensor:
    """detectron2 puts background last in ``cls_score``; torchvision first."""
    return torch.cat([value[-1:], value[:-1]])


def _prepend_zeros(value: Tensor, rows: int) -> Tensor:
    return torch.cat([value.new_zeros((rows, *value.shape[1:])), value])


def convert_detectron2_fapn_rcnn(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Map the authors' Faster/Mask R-CNN FaPN checkpoint onto :func:`detectron2_fapn_rcnn`.

    Covers the ResNet body (:func:`convert_detectron2_resnet`), the FaPN neck, the RPN and the box and mask
    heads (class-specific box regression and masks; background moved to index 0). See the module docstring.

    Args:
        state_dict: the checkpoint's ``"model"`` entry (detectron2 names).

    Returns:
        ``(mapped, unmapped)``: a state dict for ``detectron2_fapn_rcnn(depth, mask=..., num_classes=K + 1)``
        and the input keys nothing maps (e.g. PointRend heads, ``pixel_mean``), in input order.
    """
    body, rest = convert_detectron2_resnet(
        {k: v for k, v in state_dict.items() if k.startswith("backbone.bottom_up.")}
    )
    mapped = {f"backbone.body.{k}": v for k, v in body.items()}
    unmapped = list(rest)
    for key, value in state_dict.items():
        if key.startswith("backbone.bottom_up."):
            continue
        new_key: str | None = None
        for pattern, replacement in _SIMPLE_RULES:
            if pattern.match(key):
                new_key = pattern.sub(replacement, key)
                break
        if new_key is None and (match := _FAN_ALIGN.match(key)) and match.group(2) in _LEVEL_PARTS:
            new_key = f"backbone.fapn.merges.{int(match.group(1)) - 2}.{_LEVEL_PARTS[match.group(2)]}"
        elif new_key is None and (match := _FPN_OUTPUT.match(key)):
            new_key = f"backbone.fapn.output_convs.{int(match.group(1)) - 2}.{match.group(2)}"
        elif new_key is None and (match := _MASK_FCN.match(key)):
            new_key = f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
        elif new_key is None and key.startswith("roi_heads.box_predictor.cls_score."):
            new_key, value = key, _background_first(value)
        elif new_key is None and key.startswith("roi_heads.box_predictor.bbox_pred."):
            new_key, value = key, _prepend_zeros(value, 4)
        elif new_key is None and key.startswith("roi_heads.mask_head.predictor."):
            new_key = key.replace("roi_heads.mask_head.predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
            value = _prepend_zeros(value, 1)
        if new_key is None:
            unmapped.append(key)
        else:
            mapped[new_key] = value
    return mapped, unmapped


def detectron2_fapn_rcnn(
    depth: int = 50,
    *,
    mask: bool = True,
    num_classes: int = 81,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster or Mask R-CNN + FaPN in the authors' detectron2 configuration, ready for their weights.

    detectron2-style ResNet (stride in 1x1, frozen BN, ``FREEZE_AT: 2``), caffe normalisation in the transform,
    detectron2's test sizes (shorter side 800, at most 1333) and RPN top-k (1000 after NMS in training).

    Args:
        depth: 50 or 101.
        mask: Mask R-CNN (``True``) or Faster R-CNN.
        num_classes: 81 for COCO (80 contiguous classes + background at 0).
        **kwargs: passed to ``MaskRCNN``/``FasterRCNN``, overriding the defaults above.

    Example:
        >>> model = detectron2_fapn_rcnn(50, mask=True)
        >>> mapped, unmapped = convert_detectron2_fapn_rcnn(torch.load(path)["model"])  # doctest: +SKIP
        >>> model.load_state_dict(mapped)  # doctest: +SKIP
    """
    body = detectron2_resnet(depth)
    backbone = resnet_fapn_extractor(body, trainable_layers=3)
    defaults: dict[str, Any] = {
        "min_size": 800,
        "max_size": 1333,
        "image_mean": [m / 255.0 for m in CAFFE_RGB_MEAN],
        "image_std": [s / 255.0 for s in CAFFE_STD],
        "rpn_post_nms_top_n_train": 1000,
        "box_detections_per_img": 100,
    }
    defaults.update(kwargs)
    detector = MaskRCNN if mask else FasterRCNN
    return detector(backbone, num_classes=num_classes, **defaults)
