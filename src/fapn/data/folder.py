"""A user's own data: a folder of images, a folder of index masks with the same file stems, and a class list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from fapn.data.base import DatasetInfo, SegmentationDataset, Transform, default_palette, require_dir

__all__ = ["image_folder", "read_class_list"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_class_list(path: str | os.PathLike[str], name: str = "folder") -> DatasetInfo:
    """Read a class list: a ``.txt`` with one name a line, or a JSON/YAML mapping with ``classes`` (names),
    optional ``palette`` ([[r, g, b], ...]) and optional ``ignore_index`` (default 255)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    if path.suffix == ".txt":
        meta: dict = {"classes": [line.strip() for line in path.read_text().splitlines() if line.strip()]}
    else:
        try:
            loaded = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:  # json's error is a ValueError already; yaml's would be a traceback
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
        meta = loaded if isinstance(loaded, dict) else {"classes": loaded}
    classes = meta.get("classes")
    if not classes or not isinstance(classes, list):
        raise ValueError(f"{path}: expected a non-empty list of class names under 'classes'")
    palette = meta.get("palette") or default_palette(len(classes))
    if len(palette) < len(classes):
        raise ValueError(f"{path}: palette has {len(palette)} colours for {len(classes)} classes")
    return DatasetInfo(
        name,
        tuple(map(str, classes)),
        tuple((int(c[0]), int(c[1]), int(c[2])) for c in palette[: len(classes)]),
        int(meta.get("ignore_index", 255)),
    )


def image_folder(
    root: str | os.PathLike[str],
    split: str = "train",
    transforms: Transform | None = None,
    classes_file: str = "classes.yaml",
    images: str = "images",
    masks: str = "masks",
) -> SegmentationDataset:
    """``root/{images}/{split}/NAME.jpg|png`` with ``root/{masks}/{split}/NAME.png`` (pixel = class index,
    ``ignore_index`` for unlabelled pixels) and the class list ``root/{classes_file}`` (see
    :func:`read_class_list`). Without a ``split`` sub-folder, ``root/{images}`` and ``root/{masks}`` are used.

    Example:
        >>> ds = image_folder("my_data", "train")  # doctest: +SKIP
    """
    root = require_dir(root, "dataset root")
    classes_path = Path(classes_file) if Path(classes_file).is_absolute() else root / classes_file
    info = read_class_list(classes_path, name=root.name)
    image_dir, mask_dir = root / images / split, root / masks / split
    if not image_dir.is_dir() and (root / images).is_dir() and not any(p.is_dir() for p in (root / images).iterdir()):
        image_dir, mask_dir = root / images, root / masks
    require_dir(image_dir, f"images of split {split!r}")
    require_dir(mask_dir, f"masks of split {split!r}")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir} (empty split?)")
    samples = []
    for image in files:
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"image {image} has no mask: expected {mask}")
        samples.append((image, mask))
    return SegmentationDataset(samples, info, None, transforms)
