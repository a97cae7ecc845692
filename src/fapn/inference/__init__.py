"""Inference: run a trained checkpoint on images in one line, whole-image or sliding-window.

Example:
    >>> from fapn.inference import Segmenter
    >>> label = Segmenter.from_checkpoint("runs/camvid/best.pt").predict("street.png")  # doctest: +SKIP
"""

from fapn.data.base import IMAGENET_MEAN, IMAGENET_STD
from fapn.inference.io import IMAGE_EXTENSIONS, collect_images, load_image, save_label_png, save_rgb_png
from fapn.inference.segmenter import ImageLike, Segmenter
from fapn.inference.sliding_window import sliding_window_logits, window_starts
from fapn.runtime import resolve_device

__all__ = [
    "Segmenter",
    "ImageLike",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "resolve_device",
    "sliding_window_logits",
    "window_starts",
    "collect_images",
    "load_image",
    "save_label_png",
    "save_rgb_png",
    "IMAGE_EXTENSIONS",
]
