"""Build a dataset by name: one dict from names to builder functions, no registry."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fapn.data.ade20k import ade20k
from fapn.data.base import SegmentationDataset, Transform
from fapn.data.camvid import camvid
from fapn.data.cityscapes import cityscapes
from fapn.data.coco_stuff import coco_stuff
from fapn.data.folder import image_folder
from fapn.data.synthetic import synthetic_streets

__all__ = ["DATASETS", "DEFAULT_FOLDERS", "build_dataset", "default_root"]

DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "cityscapes": cityscapes,
    "coco_stuff": coco_stuff,
    "ade20k": ade20k,
    "camvid": camvid,
    "folder": image_folder,
    "synthetic": synthetic_streets,
}
"""Dataset name -> builder ``(root, split, transforms, **options)``."""

DEFAULT_FOLDERS: dict[str, str] = {
    "cityscapes": "cityscapes",
    "coco_stuff": "coco_stuff",
    "ade20k": "ADEChallengeData2016",
    "camvid": "camvid-half",
}
"""Folder under ``$FAPN_DATA`` used when a config leaves ``data.root`` empty."""


def default_root(name: str) -> Path:
    """``$FAPN_DATA/<folder>`` for dataset ``name``; a ``ValueError`` saying what to set if ``FAPN_DATA`` is unset."""
    base = os.environ.get("FAPN_DATA")
    if not base:
        raise ValueError(
            f"no root folder for dataset {name!r}: set data.root (--set data.root=PATH) or the FAPN_DATA "
            f"environment variable (the folder holding {DEFAULT_FOLDERS.get(name, name)}/)"
        )
    return Path(base) / DEFAULT_FOLDERS.get(name, name)


def build_dataset(
    name: str,
    root: str | os.PathLike[str] | None,
    split: str,
    transforms: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """The split ``split`` of dataset ``name`` (a key of :data:`DATASETS`).

    Example:
        >>> ds = build_dataset("synthetic", None, "val", size=[64, 64], num_images=2)
        >>> len(ds)
        2
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}")
    if root is None and name not in ("synthetic",):
        root = default_root(name)
    return DATASETS[name](root, split, transforms, **options)
