"""ADE20K, SceneParsing layout ``ADEChallengeData2016/{images,annotations}/{training,validation}``: 150
classes, label 0 ("other") ignored, so train id = label - 1 and 0 -> 255."""

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

__all__ = ["ade20k", "ADE20K_INFO"]

_ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
    "flag",
)
assert len(_ADE20K_CLASSES) == 150

ADE20K_INFO = DatasetInfo("ade20k", _ADE20K_CLASSES, default_palette(150), ignore_index=255)


def ade20k(root: str | os.PathLike[str], split: str = "training", transforms: Transform | None = None) -> SegmentationDataset:
    """ADE20K split ``training`` or ``validation`` under ``root`` (the ``ADEChallengeData2016`` folder).

    Example:
        >>> ds = ade20k("/data/ADEChallengeData2016", "validation")  # doctest: +SKIP
    """
    root = require_dir(root, "ADE20K root (ADEChallengeData2016 with images/ and annotations/)")
    samples = pair_files(
        Path(root) / "images" / split, Path(root) / "annotations" / split, "*.jpg",
        lambda p: p.with_suffix(".png").name, f"ADE20K {split}",
    )
    mapping = {0: 255, **{raw: raw - 1 for raw in range(1, 151)}}
    return SegmentationDataset(samples, ADE20K_INFO, label_lut(mapping), transforms)
