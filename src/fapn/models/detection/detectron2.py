"""detectron2-style ResNet and the R-CNN in the authors' configuration, for their released detection checkpoints.

The authors trained on detectron2 with MSRA's caffe ResNets: the stride of each down-sampling bottleneck is in
its first 1x1 conv (``STRIDE_IN_1X1: True``), batch norm is frozen, and images enter as BGR 0-255 minus
``[103.53, 116.28, 123.675]`` with std 1. Here that body is a torchvision ``ResNet`` with the strides moved and
``FrozenBatchNorm2d``, so everything built for torchvision ResNets (``BackboneWithFaPN``, freezing) works on
it unchanged. The BGR input is folded into the weights: :func:`fapn.convert.convert_detectron2_resnet` reverses the
input channels of the stem conv, so the model takes RGB, and torchvision's ``GeneralizedRCNNTransform`` does the
caffe normalisation with ``image_mean = CAFFE_RGB_MEAN / 255`` and ``image_std = 1 / 255`` (it scales images in
``[0, 1]``). Both foldings are exact. The key mapping is :mod:`fapn.convert.detectron2`'s.

Remaining behavioural differences between torchvision's heads and detectron2's (not weights; see
docs/detection.md): torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False`` and ``sampling_ratio=2``
(detectron2: ``ROIAlignV2``, ``aligned=True``, sampling ratio 0), and torchvision rounds its base anchors.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import misc as misc_nn_ops

from fapn.models.pyramid import resnet_fapn_extractor
from fapn.models.registry import register_model

__all__ = ["CAFFE_RGB_MEAN", "CAFFE_STD", "detectron2_resnet", "detectron2_fapn_rcnn"]

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


@register_model(task="detection")
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
        >>> from fapn.convert import convert_detectron2_fapn, load_detectron2_checkpoint
        >>> model = detectron2_fapn_rcnn(50, mask=True)
        >>> mapped, unmapped = convert_detectron2_fapn(load_detectron2_checkpoint(path))  # doctest: +SKIP
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
