"""COCO-Stuff-164k: ``images/{train2017,val2017}/*.jpg`` and ``annotations/{train2017,val2017}/*.png``
(the ``stuffthingmaps`` PNGs: value = COCO category id - 1, 255 unlabelled). The 182 id slots hold 171 used
classes (80 things + 91 stuff); they are remapped to 0..170, 255 ignored."""

from __future__ import annotations

import os
from pathlib import Path

from fapn.data.base import (
    DatasetInfo,
    SegmentationDataset,
    Transform,
    default_palette,
    label_lut,
    pair_files,
    require_dir,
)

__all__ = ["coco_stuff", "COCO_STUFF_INFO", "COCO_STUFF_RAW_IDS"]

_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
)
assert len(_THINGS) == 80 and len(_STUFF) == 91

_UNUSED_RAW = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}  # COCO ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91
COCO_STUFF_RAW_IDS: tuple[int, ...] = tuple(i for i in range(182) if i not in _UNUSED_RAW)
"""Raw PNG value of each of the 171 classes, in train-id order."""

COCO_STUFF_INFO = DatasetInfo("coco_stuff", _THINGS + _STUFF, default_palette(171), ignore_index=255)


def coco_stuff(root: str | os.PathLike[str], split: str = "train2017", transforms: Transform | None = None) -> SegmentationDataset:
    """COCO-Stuff-164k split ``train2017`` or ``val2017`` under ``root``.

    Example:
        >>> ds = coco_stuff("/data/coco_stuff", "val2017")  # doctest: +SKIP
    """
    root = require_dir(root, "COCO-Stuff root (with images/ and annotations/)")
    samples = pair_files(
        Path(root) / "images" / split, Path(root) / "annotations" / split, "*.jpg",
        lambda p: p.with_suffix(".png").name, f"COCO-Stuff {split}",
    )
    mapping = {raw: train_id for train_id, raw in enumerate(COCO_STUFF_RAW_IDS)}
    mapping[255] = 255
    return SegmentationDataset(samples, COCO_STUFF_INFO, label_lut(mapping), transforms)
