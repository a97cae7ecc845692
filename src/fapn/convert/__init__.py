"""Converting the authors' detectron2 FaPN checkpoints to fapn's modules: every key mapping of the library.

Example:
    >>> from fapn.convert import load_detectron2_checkpoint, convert_detectron2_fapn
    >>> state = load_detectron2_checkpoint("faster_rcnn_R_50_FPN_1x_fapn.pth")  # doctest: +SKIP
    >>> mapped, unmapped = convert_detectron2_fapn(state)  # doctest: +SKIP
"""

from fapn.convert.detectron2 import (
    convert_detectron2_fapn,
    convert_detectron2_fapn_rcnn,
    convert_detectron2_resnet,
    convert_fapn_neck,
    load_detectron2_checkpoint,
    neck_stages,
)

__all__ = [
    "load_detectron2_checkpoint",
    "convert_fapn_neck",
    "convert_detectron2_resnet",
    "convert_detectron2_fapn",
    "convert_detectron2_fapn_rcnn",
    "neck_stages",
]
