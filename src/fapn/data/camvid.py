"""CamVid in the SegNet layout: ``{split}/*.png`` and ``{split}annot/*.png`` (11 classes, 11 = ignore), with
``classes.json`` (names and palette) when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fapn.data.base import DatasetInfo, SegmentationDataset, Transform, pair_files, require_dir

__all__ = ["camvid", "CAMVID_INFO"]

CAMVID_INFO = DatasetInfo(
    name="camvid",
    class_names=(
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    ignore_index=11,
)


def camvid(
    root: str | os.PathLike[str], split: str = "train", transforms: Transform | None = None
) -> SegmentationDataset:
    """CamVid split ``split`` (``train``, ``val``, ``test``) under ``root`` (SegNet tutorial layout).

    Example:
        >>> ds = camvid("../shared/data/camvid-half", "val")  # doctest: +SKIP
        >>> len(ds), ds.num_classes, ds.ignore_index  # doctest: +SKIP
        (101, 11, 11)
    """
    root = require_dir(root, "CamVid root (with train/, trainannot/, val/, valannot/)")
    info = CAMVID_INFO
    classes_file = Path(root) / "classes.json"
    if classes_file.is_file():
        meta = json.loads(classes_file.read_text())
        info = DatasetInfo(
            "camvid",
            tuple(meta["classes"]),
            tuple(tuple(c) for c in meta["palette"][: len(meta["classes"])]),
            int(meta.get("ignore_index", 11)),
        )
    samples = pair_files(Path(root) / split, Path(root) / f"{split}annot", "*.png", lambda p: p.name, f"CamVid {split}")
    return SegmentationDataset(samples, info, None, transforms)
