"""COCO panoptic data (PNG + JSON) as Panoptic FPN targets: instances for things, a semantic map for stuff."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from fapn.data.base import image_to_rgb
from fapn.data.coco_detection import detection_transforms

__all__ = ["CocoPanoptic", "rgb_to_id", "id_to_rgb", "read_panoptic_png"]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours to segment ids: ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids to COCO panoptic PNG colours (uint8 ``[..., 3]``)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Segment ids ``[H, W]`` int64 from a COCO panoptic PNG."""
    return rgb_to_id(np.asarray(Image.open(path).convert("RGB")))


class CocoPanoptic(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """COCO panoptic annotations as :class:`~fapn.models.detection.PanopticFPN` training targets.

    Targets: ``boxes``, ``labels`` (things, contiguous ``1..K``), ``masks`` for non-crowd things; ``sem_seg``
    ``[H, W]`` int64 with 0 for every thing pixel (crowd included), ``1..S`` for stuff in category-id order,
    255 for unlabelled pixels (detectron2's Panoptic FPN semantic target); ``image_id``.

    Args:
        image_root: folder of the images (``file_name`` with a ``.jpg`` or the PNG's name).
        panoptic_json: the panoptic JSON (``images``, ``annotations``, ``categories`` with ``isthing``).
        panoptic_root: folder of the panoptic PNGs.
        transforms: joint transform (default :func:`~fapn.data.coco_detection.detection_transforms`).
        train: default transforms with flips.

    Example:
        >>> data = CocoPanoptic("images", "annotations/panoptic.json", "annotations/panoptic")  # doctest: +SKIP
        >>> image, target = data[0]  # doctest: +SKIP
        >>> target["sem_seg"].shape == image.shape[1:]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        image_root: str | os.PathLike[str],
        panoptic_json: str | os.PathLike[str],
        panoptic_root: str | os.PathLike[str],
        transforms: Callable[..., Any] | None = None,
        *,
        train: bool = False,
    ) -> None:
        for path, what in (
            (panoptic_json, "panoptic JSON"),
            (panoptic_root, "panoptic PNG folder"),
            (image_root, "image folder"),
        ):
            if not os.path.exists(path):
                raise FileNotFoundError(f"COCO {what} not found: {path}")
        data = json.loads(Path(panoptic_json).read_text())
        self.image_root = Path(image_root)
        self.panoptic_root = Path(panoptic_root)
        self.panoptic_json = Path(panoptic_json)
        self.categories = {c["id"]: c for c in data["categories"]}
        things = sorted(c["id"] for c in data["categories"] if c["isthing"])
        stuff = sorted(c["id"] for c in data["categories"] if not c["isthing"])
        self.thing_to_label = {cat: i + 1 for i, cat in enumerate(things)}
        self.stuff_to_label = {cat: i + 1 for i, cat in enumerate(stuff)}
        self.label_to_thing = {v: k for k, v in self.thing_to_label.items()}
        self.label_to_stuff = {v: k for k, v in self.stuff_to_label.items()}
        self.images = {img["id"]: img for img in data["images"]}
        self.annotations = data["annotations"]
        self.transforms = transforms if transforms is not None else detection_transforms(train, sanitize=False)

    @property
    def num_classes(self) -> int:
        """Thing classes + background (the Mask R-CNN's ``num_classes``)."""
        return len(self.thing_to_label) + 1

    @property
    def num_stuff_classes(self) -> int:
        return len(self.stuff_to_label)

    def __len__(self) -> int:
        return len(self.annotations)

    def image_path(self, annotation: dict[str, Any]) -> Path:
        name = self.images[annotation["image_id"]]["file_name"]
        return self.image_root / name

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        annotation = self.annotations[index]
        with Image.open(self.image_path(annotation)) as opened:
            image = Image.fromarray(image_to_rgb(opened))
        ids = read_panoptic_png(self.panoptic_root / annotation["file_name"])
        semantic = np.full(ids.shape, 255, dtype=np.int64)
        masks, labels = [], []
        for segment in annotation["segments_info"]:
            region = ids == segment["id"]
            category = self.categories[segment["category_id"]]
            if category["isthing"]:
                semantic[region] = 0
                if not segment.get("iscrowd", 0) and region.any():
                    masks.append(region)
                    labels.append(self.thing_to_label[segment["category_id"]])
            else:
                semantic[region] = self.stuff_to_label[segment["category_id"]]
        height, width = ids.shape
        mask_tensor = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width, dtype=torch.bool)
        boxes = masks_to_boxes(mask_tensor)
        boxes[:, 2:] += 1  # inclusive last pixel -> exclusive box corner, as COCO's bbox
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": tv_tensors.Mask(mask_tensor.to(torch.uint8)),
            "sem_seg": tv_tensors.Mask(torch.from_numpy(semantic)),
        }
        image, target = self.transforms(image, target)
        target["image_id"] = torch.tensor(int(annotation["image_id"]))
        return image, {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in target.items()}
