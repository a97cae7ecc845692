"""Cityscapes, read in the layout it ships in: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and
``gtFine/{split}/{city}/*_gtFine_labelIds.png``; label ids are mapped to the 19 train ids (255 = ignore) by the
official table (``cityscapesscripts.helpers.labels``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fapn.data.base import DatasetInfo, SegmentationDataset, Transform, label_lut, pair_files, require_dir

__all__ = ["cityscapes", "CITYSCAPES_INFO", "CITYSCAPES_LABEL_TO_TRAIN", "cityscapes_train_to_label_ids"]

CITYSCAPES_INFO = DatasetInfo(
    name="cityscapes",
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    palette=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
    ignore_index=255,
)

_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {label_id: 255 for label_id in range(34)}
CITYSCAPES_LABEL_TO_TRAIN.update({label_id: train_id for train_id, label_id in enumerate(_TRAIN_LABEL_IDS)})
"""The official labelId -> trainId table (ids 0..33; everything not trained on -> 255)."""


def cityscapes_train_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map predicted train ids (0..18) to label ids, the official submission format (unknown -> 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(_TRAIN_LABEL_IDS)] = _TRAIN_LABEL_IDS
    return lut[np.asarray(train_ids, dtype=np.int64)]


def cityscapes(
    root: str | os.PathLike[str], split: str = "train", transforms: Transform | None = None
) -> SegmentationDataset:
    """The fine-annotation Cityscapes split ``split`` (``train``, ``val``) under ``root``.

    Example:
        >>> ds = cityscapes("/data/cityscapes", "val")  # doctest: +SKIP
        >>> ds.num_classes, ds.ignore_index  # doctest: +SKIP
        (19, 255)
    """
    root = require_dir(root, "Cityscapes root (with leftImg8bit/ and gtFine/)")
    samples = pair_files(
        Path(root) / "leftImg8bit" / split,
        Path(root) / "gtFine" / split,
        "*_leftImg8bit.png",
        lambda p: p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"),
        f"Cityscapes {split}",
        recursive=True,
    )
    return SegmentationDataset(samples, CITYSCAPES_INFO, label_lut(CITYSCAPES_LABEL_TO_TRAIN), transforms)
