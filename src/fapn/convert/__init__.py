"""Converting the authors' detectron2 FaPN checkpoints to fapn's modules.

Example:
    >>> from fapn.convert import load_detectron2_checkpoint, convert_fapn_neck
    >>> state = load_detectron2_checkpoint("faster_rcnn_R_50_FPN_1x_fapn.pth")  # doctest: +SKIP
    >>> neck_state, unmapped = convert_fapn_neck(state)  # doctest: +SKIP
"""

from fapn.convert.detectron2 import NECK_KEY_PATTERNS, convert_detectron2_fapn, convert_fapn_neck, load_detectron2_checkpoint

__all__ = ["load_detectron2_checkpoint", "convert_fapn_neck", "convert_detectron2_fapn", "NECK_KEY_PATTERNS"]
