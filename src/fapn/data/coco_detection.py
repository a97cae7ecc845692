"""COCO detection / instance segmentation data for torchvision's detectors (pycocotools underneath)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from fapn.data.base import image_to_rgb

__all__ = ["CocoInstances", "detection_transforms", "collate_detection"]


def detection_transforms(train: bool, *, sanitize: bool = True) -> v2.Compose:
    """Image to float ``[0, 1]`` plus a random horizontal flip in training.

    ``sanitize`` drops degenerate boxes with their labels and masks (off for panoptic targets, whose
    ``sem_seg`` map is also a ``Mask`` that must not be filtered).

    Resizing (detectron2's multi-scale shorter side 640-800) is left to the detector's own transform
    (``min_size=(640, 672, ..., 800)`` picks one per batch in training, as detectron2 does).
    """
    ops: list[Any] = [v2.ToImage()]
    if train:
        ops.append(v2.RandomHorizontalFlip(0.5))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if sanitize:
        ops.append(v2.SanitizeBoundingBoxes(min_size=1))
    return v2.Compose(ops)


class _CocoDetection(CocoDetection):
    """torchvision's ``CocoDetection`` reading images of any bit depth and mode as :func:`image_to_rgb` does."""

    def _load_image(self, id: int) -> Image.Image:
        path = os.path.join(self.root, self.coco.loadImgs(id)[0]["file_name"])
        with Image.open(path) as image:
            return Image.fromarray(image_to_rgb(image))


class CocoInstances(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """COCO-format instances as ``(image, target)`` in torchvision's detection convention.

    Crowd annotations are dropped from the targets (evaluation keeps them, through pycocotools). Category ids
    (sparse in COCO) become contiguous labels ``1..K``, 0 being background; :attr:`label_to_category` maps
    back for evaluation.

    Args:
        image_root: folder of the images.
        annotation_file: the instances JSON.
        transforms: a joint ``(image, target)`` transform (default :func:`detection_transforms`).
        train: default transforms with flips.
        masks: return ``masks`` ``[N, H, W]`` uint8 (Mask R-CNN).

    Example:
        >>> data = CocoInstances("images", "annotations/instances.json")  # doctest: +SKIP
        >>> image, target = data[0]  # doctest: +SKIP
        >>> sorted(target)  # doctest: +SKIP
        ['boxes', 'image_id', 'labels', 'masks']
    """

    def __init__(
        self,
        image_root: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        transforms: Callable[..., Any] | None = None,
        *,
        train: bool = False,
        masks: bool = True,
    ) -> None:
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"COCO image folder not found: {image_root}")
        keys = ["boxes", "labels", "image_id", "iscrowd"] + (["masks"] if masks else [])
        base = _CocoDetection(str(image_root), str(annotation_file))
        self.dataset = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        self.coco = base.coco
        self.with_masks = masks
        category_ids = sorted(self.coco.getCatIds())
        self.category_to_label = {cat: i + 1 for i, cat in enumerate(category_ids)}
        self.label_to_category = {label: cat for cat, label in self.category_to_label.items()}
        self.class_names = [self.coco.cats[cat]["name"] for cat in category_ids]
        self.transforms = transforms if transforms is not None else detection_transforms(train)

    @property
    def num_classes(self) -> int:
        """Classes including background (the detectors' ``num_classes``)."""
        return len(self.category_to_label) + 1

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, raw = self.dataset[index]
        height, width = image.height, image.width
        if "boxes" not in raw:  # no annotations at all
            raw = {
                "image_id": raw["image_id"],
                "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
                "labels": torch.zeros(0, dtype=torch.int64),
                "iscrowd": torch.zeros(0, dtype=torch.int64),
                "masks": tv_tensors.Mask(torch.zeros(0, height, width, dtype=torch.uint8)),
            }
        keep = torch.as_tensor(raw["iscrowd"]) == 0
        labels = torch.tensor([self.category_to_label[int(c)] for c in raw["labels"]], dtype=torch.int64)
        target: dict[str, Any] = {
            "boxes": tv_tensors.wrap(raw["boxes"][keep], like=raw["boxes"]),
            "labels": labels[keep],
        }
        if self.with_masks:
            target["masks"] = tv_tensors.Mask(raw["masks"][keep])
        image, target = self.transforms(image, target)
        target["image_id"] = torch.tensor(int(raw["image_id"]))
        return image, {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in target.items()}


def collate_detection(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Lists of images and targets, as torchvision's detectors take them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
