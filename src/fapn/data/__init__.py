"""Datasets and transforms for semantic segmentation.

Each dataset reads the layout it ships in: :func:`cityscapes`, :func:`coco_stuff`, :func:`ade20k`,
:func:`camvid`, :func:`image_folder` (your own images + index masks + class list) and the built-in
:func:`synthetic_streets`. :func:`build_dataset` picks one by name.

Example:
    >>> from fapn.data import build_dataset, train_transforms
    >>> ds = build_dataset("synthetic", None, "train", train_transforms([64, 64], 255), size=[80, 96], num_images=8)
    >>> image, mask = ds[0]
    >>> tuple(image.shape), tuple(mask.shape)
    ((3, 64, 64), (64, 64))
"""

from fapn.data.ade20k import ADE20K_INFO, ade20k
from fapn.data.base import DatasetInfo, SampleError, SegmentationDataset, read_image, read_label
from fapn.data.build import DATASETS, build_dataset, default_root
from fapn.data.camvid import CAMVID_INFO, camvid
from fapn.data.cityscapes import CITYSCAPES_INFO, CITYSCAPES_LABEL_TO_TRAIN, cityscapes, cityscapes_train_to_label_ids
from fapn.data.coco_stuff import COCO_STUFF_INFO, coco_stuff
from fapn.data.folder import image_folder, read_class_list
from fapn.data.synthetic import SYNTHETIC_INFO, SyntheticStreets, synthetic_streets
from fapn.data.transforms import RandomScale, eval_transforms, train_transforms

__all__ = [
    "ADE20K_INFO",
    "CAMVID_INFO",
    "CITYSCAPES_INFO",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "COCO_STUFF_INFO",
    "DATASETS",
    "DatasetInfo",
    "RandomScale",
    "SYNTHETIC_INFO",
    "SampleError",
    "SegmentationDataset",
    "SyntheticStreets",
    "ade20k",
    "build_dataset",
    "camvid",
    "cityscapes",
    "cityscapes_train_to_label_ids",
    "coco_stuff",
    "default_root",
    "eval_transforms",
    "image_folder",
    "read_class_list",
    "read_image",
    "read_label",
    "synthetic_streets",
    "train_transforms",
]
