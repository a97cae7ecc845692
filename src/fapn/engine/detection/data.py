"""The data of a detection recipe: COCO instances or panoptic annotations, or the synthetic shapes generated on
first use (:func:`fapn.data.synthetic_coco.make_synthetic_coco`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fapn.engine.detection.config import DetectionConfig

__all__ = ["build_datasets", "data_root"]


def data_root(cfg: DetectionConfig) -> Path:
    data = cfg.data
    if data.root is not None:
        return Path(os.path.expandvars(os.path.expanduser(data.root)))
    if data.format == "synthetic":
        s = data.synthetic
        tag = "_".join(f"{k}{s[k]}" for k in sorted(s)) or "default"
        return Path(tempfile.gettempdir()) / "fapn-synthetic-coco" / tag
    base = os.environ.get("FAPN_DATA")
    if base is None:
        raise FileNotFoundError(
            "data.root is not set and FAPN_DATA is not defined: set data.root=/path/to/coco "
            "(holding train2017/, val2017/, annotations/) or export FAPN_DATA"
        )
    return Path(base) / "coco"


def _synthetic_paths(cfg: DetectionConfig, split: str) -> dict[str, Path]:
    from fapn.data.synthetic_coco import make_synthetic_coco

    options = dict(cfg.data.synthetic)
    num_train = int(options.pop("num_train", 64))
    num_val = int(options.pop("num_val", 16))
    seed = int(options.pop("seed", 0))
    root = data_root(cfg) / split
    marker = root / "annotations" / "panoptic.json"
    count = num_train if split == "train" else num_val
    if not marker.is_file():
        return make_synthetic_coco(root, count, seed=seed + (0 if split == "train" else 1000), **options)
    return {
        "images": root / "images",
        "instances": root / "annotations" / "instances.json",
        "panoptic_json": marker,
        "panoptic_root": root / "annotations" / "panoptic",
    }


def build_datasets(cfg: DetectionConfig, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Dataset[Any]]:
    """The train/val datasets the config names: :class:`~fapn.data.coco_detection.CocoInstances` or
    :class:`~fapn.data.coco_panoptic.CocoPanoptic` (for ``task: panoptic``). Each gets ``instances_json``
    (or ``None``) for AP evaluation."""
    from fapn.data.coco_detection import CocoInstances
    from fapn.data.coco_panoptic import CocoPanoptic

    datasets: dict[str, Dataset[Any]] = {}
    for split in splits:
        train = split == "train"
        instances: Path | None
        panoptic_json: Path | None
        panoptic_root: Path | None
        if cfg.data.format == "synthetic":
            paths = _synthetic_paths(cfg, split)
            images, instances = paths["images"], paths["instances"]
            panoptic_json, panoptic_root = paths["panoptic_json"], paths["panoptic_root"]
        else:
            root = data_root(cfg)
            images = root / (cfg.data.train_images if train else cfg.data.val_images)
            annotations = cfg.data.train_annotations if train else cfg.data.val_annotations
            instances = root / annotations if annotations else None
            pj = cfg.data.train_panoptic_json if train else cfg.data.val_panoptic_json
            pr = cfg.data.train_panoptic_root if train else cfg.data.val_panoptic_root
            panoptic_json = root / pj if pj else None
            panoptic_root = root / pr if pr else None
        dataset: Any
        if cfg.task == "panoptic":
            if panoptic_json is None or panoptic_root is None:
                raise ValueError(f"task panoptic needs data.{split}_panoptic_json and data.{split}_panoptic_root")
            dataset = CocoPanoptic(images, panoptic_json, panoptic_root, train=train)
        else:
            if instances is None:
                raise ValueError(f"task {cfg.task} needs data.{split}_annotations (an instances JSON)")
            dataset = CocoInstances(images, instances, train=train, masks=cfg.task == "instance")
        dataset.instances_json = instances
        datasets[split] = dataset
    return datasets
