"""A small synthetic data set in COCO format (instances JSON + panoptic PNG/JSON), for tests and demos.

Each image has stuff bands (``sky``, ``ground``, ...: a flat colour with noise, split by a random wavy
boundary) and things drawn on top, possibly occluding each other: rectangles (``box``), ellipses (``disc``)
and triangles (``triangle``), each class with its own hue range. Masks are the visible parts, so occluded
instances have non-convex masks. Everything is written as real COCO files, read back by pycocotools and by
:mod:`fapn.data.coco_detection` / :mod:`fapn.data.coco_panoptic` like real COCO.

The small-object regime (``small_fraction > 0``): each thing is drawn at a size drawn from
``small_min_size_fraction..small_max_size_fraction`` of the shorter side with probability ``small_fraction``, else
from the usual range. :data:`SMALL_OBJECT_REGIME` is the setting of the small-object benchmark: at 160x192, up to
10 things per image, 60% of them 6-24 pixels across, the rest 19-72; with seed 0 and 64 images there are 315
instances (4.9 per image), 76% with a visible area under 32^2 pixels (COCO's "small"), 24% medium and none large
(``tests/test_synthetic_coco.py`` asserts at least 40% small). The training recipes use the generated size, so
these are the sizes the models see.

Layout under ``root``::

    images/000001.png ...
    annotations/instances.json           COCO detection/instance (RLE segmentations)
    annotations/panoptic.json            COCO panoptic (segments_info per image)
    annotations/panoptic/000001.png ...  COCO panoptic PNGs (id = R + 256 G + 256^2 B)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["THING_CLASSES", "STUFF_CLASSES", "SMALL_OBJECT_REGIME", "make_synthetic_coco", "synthetic_categories"]

THING_CLASSES = ("box", "disc", "triangle")
STUFF_CLASSES = ("sky", "ground", "water")
_THING_COLOURS = ((200, 60, 60), (60, 190, 60), (70, 90, 220))
_STUFF_COLOURS = ((150, 180, 200), (130, 110, 80), (40, 90, 120))

SMALL_OBJECT_REGIME: dict[str, Any] = {
    "height": 160,
    "width": 192,
    "max_instances": 10,
    "small_fraction": 0.6,
    "small_min_size_fraction": 0.04,
    "small_max_size_fraction": 0.15,
}
""":func:`make_synthetic_coco` arguments of the small-object regime (see the module docstring for its sizes)."""


def synthetic_categories(num_things: int = 3, num_stuff: int = 2) -> list[dict[str, Any]]:
    """COCO categories: things get ids ``1..num_things``, stuff ``101..100+num_stuff`` (gaps, like COCO)."""
    if not 1 <= num_things <= len(THING_CLASSES) or not 1 <= num_stuff <= len(STUFF_CLASSES):
        raise ValueError(f"num_things must be 1-{len(THING_CLASSES)}, num_stuff 1-{len(STUFF_CLASSES)}")
    things = [
        {
            "id": i + 1,
            "name": THING_CLASSES[i],
            "supercategory": "shape",
            "isthing": 1,
            "color": list(_THING_COLOURS[i]),
        }
        for i in range(num_things)
    ]
    stuff = [
        {
            "id": 101 + i,
            "name": STUFF_CLASSES[i],
            "supercategory": "stuff",
            "isthing": 0,
            "color": list(_STUFF_COLOURS[i]),
        }
        for i in range(num_stuff)
    ]
    return things + stuff


def _shape_mask(
    kind: int, height: int, width: int, rng: np.random.Generator, min_frac: float, max_frac: float
) -> np.ndarray:
    size = rng.uniform(min_frac, max_frac) * min(height, width)
    aspect = rng.uniform(0.6, 1.6)
    h, w = size / np.sqrt(aspect), size * np.sqrt(aspect)
    cy, cx = rng.uniform(h / 2, height - h / 2), rng.uniform(w / 2, width - w / 2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    if kind == 0:  # rectangle
        return (np.abs(yy - cy) <= h / 2) & (np.abs(xx - cx) <= w / 2)
    if kind == 1:  # ellipse
        return ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
    # triangle: apex up, base down
    top, bottom = cy - h / 2, cy + h / 2
    frac = np.clip((yy - top) / max(h, 1e-6), 0, 1)
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= frac * w / 2)


def _write_coco_json(
    path: Path,
    description: str,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
) -> None:
    """A COCO annotation file (instances or panoptic: the same five sections)."""
    content = {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path.write_text(json.dumps(content))


def make_synthetic_coco(
    root: str | os.PathLike[str],
    num_images: int = 32,
    *,
    height: int = 160,
    width: int = 192,
    num_things: int = 3,
    num_stuff: int = 2,
    max_instances: int = 5,
    min_size_fraction: float = 0.12,
    max_size_fraction: float = 0.45,
    small_fraction: float = 0.0,
    small_min_size_fraction: float = 0.04,
    small_max_size_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic COCO-format data set under ``root``.

    Args:
        root: output folder (created).
        num_images: images to draw.
        height, width: image size.
        num_things: thing classes (1-3).
        num_stuff: stuff classes (1-3).
        max_instances: at most this many things per image (at least 1).
        min_size_fraction, max_size_fraction: thing size relative to the shorter image side.
        small_fraction: probability that a thing is drawn small instead (0: never; the small-object regime).
        small_min_size_fraction, small_max_size_fraction: the size range of small things.
        seed: random seed; the same seed gives the same files.

    Returns:
        paths: ``images``, ``instances`` (JSON), ``panoptic_json``, ``panoptic_root``.

    Example:
        >>> paths = make_synthetic_coco(tmp_path, num_images=2)  # doctest: +SKIP
        >>> from pycocotools.coco import COCO
        ...
        ... len(COCO(str(paths["instances"])).getImgIds())  # doctest: +SKIP
        2
    """
    from pycocotools import mask as mask_utils

    if not 0.0 <= small_fraction <= 1.0:
        raise ValueError(f"small_fraction must be in [0, 1], got {small_fraction}")
    root = Path(root)
    image_dir = root / "images"
    panoptic_dir = root / "annotations" / "panoptic"
    image_dir.mkdir(parents=True, exist_ok=True)
    panoptic_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    categories = synthetic_categories(num_things, num_stuff)
    thing_ids = [c["id"] for c in categories if c["isthing"]]
    stuff_ids = [c["id"] for c in categories if not c["isthing"]]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    panoptic_annotations: list[dict[str, Any]] = []
    annotation_id = 0
    for image_id in range(1, num_images + 1):
        file_name = f"{image_id:06d}.png"
        # stuff: bands split by wavy boundaries
        xs = np.arange(width)
        stuff_map = np.zeros((height, width), dtype=np.int64)
        boundaries = np.sort(rng.uniform(0.25, 0.75, size=num_stuff - 1)) * height
        yy = np.arange(height)[:, None]
        for boundary in boundaries:
            wave = boundary + rng.uniform(3, 10) * np.sin(xs / rng.uniform(10, 30) + rng.uniform(0, 6.3))
            stuff_map += (yy >= wave[None, :]).astype(np.int64)
        pixels = np.zeros((height, width, 3), dtype=np.float32)
        for index in range(num_stuff):
            pixels[stuff_map == index] = _STUFF_COLOURS[index]
        # things, later ones on top
        masks: list[np.ndarray] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(1, max_instances + 1))):
            kind = int(rng.integers(num_things))
            # drawn only in the small regime, so that the default data stay as they were for a given seed
            small = small_fraction > 0 and rng.random() < small_fraction
            low, high = (
                (small_min_size_fraction, small_max_size_fraction) if small else (min_size_fraction, max_size_fraction)
            )
            shape = _shape_mask(kind, height, width, rng, low, high)
            masks = [m & ~shape for m in masks]
            masks.append(shape)
            labels.append(kind)
            jitter = rng.uniform(-30, 30, size=3)
            pixels[shape] = np.clip(np.array(_THING_COLOURS[kind]) + jitter, 0, 255)
        pixels += rng.normal(0, 12, size=pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})

        panoptic = np.zeros((height, width), dtype=np.int64)
        segments: list[dict[str, Any]] = []
        taken = np.zeros((height, width), dtype=bool)
        segment_id = 0
        for mask, kind in zip(masks, labels):
            area = int(mask.sum())
            if area < 16:
                continue
            annotation_id += 1
            segment_id += 1
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append(
                {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": thing_ids[kind],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": float(area),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
            # panoptic ids are random-ish colours, as in COCO
            pan_id = segment_id * 997 + 13 * image_id
            panoptic[mask] = pan_id
            taken |= mask
            segments.append({"id": pan_id, "category_id": thing_ids[kind], "area": area, "bbox": bbox, "iscrowd": 0})
        for index in range(num_stuff):
            mask = (stuff_map == index) & ~taken
            area = int(mask.sum())
            if area == 0:
                continue
            segment_id += 1
            pan_id = segment_id * 997 + 13 * image_id
            panoptic[mask] = pan_id
            ys, xs_ = np.nonzero(mask)
            bbox = [float(xs_.min()), float(ys.min()), float(xs_.max() - xs_.min() + 1), float(ys.max() - ys.min() + 1)]
            segments.append({"id": pan_id, "category_id": stuff_ids[index], "area": area, "bbox": bbox, "iscrowd": 0})
        rgb = np.stack([panoptic % 256, panoptic // 256 % 256, panoptic // 256**2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(panoptic_dir / file_name)
        panoptic_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})

    instances_path = root / "annotations" / "instances.json"
    things = [c for c in categories if c["isthing"]]
    _write_coco_json(instances_path, "fapn synthetic COCO", images, annotations, things)
    panoptic_json = root / "annotations" / "panoptic.json"
    _write_coco_json(panoptic_json, "fapn synthetic COCO panoptic", images, panoptic_annotations, categories)
    return {
        "images": image_dir,
        "instances": instances_path,
        "panoptic_json": panoptic_json,
        "panoptic_root": panoptic_dir,
    }
