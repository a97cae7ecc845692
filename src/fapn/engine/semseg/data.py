"""The data of a semantic segmentation recipe: the training and validation splits, the scan for unreadable files
(``fapn train --check-data``) and the one-line description of a split in the start-up summary."""

from __future__ import annotations

import sys
from pathlib import Path

from torchvision.transforms import v2

from fapn.data.base import SampleError, SegmentationDataset
from fapn.data.build import build_dataset
from fapn.data.scan import BadFile, check_files, check_headers, format_bad_files, without_samples, write_report
from fapn.data.transforms import eval_transforms, train_transforms
from fapn.engine.semseg.config import DataConfig, SegmentationConfig

__all__ = ["scan_splits", "describe_split", "recipe_train_transforms", "build_datasets", "check_data"]


def recipe_train_transforms(data: DataConfig, ignore_index: int) -> v2.Compose:
    """The training augmentation a recipe's ``data`` section describes (``ignore_index`` fills padding)."""
    return train_transforms(
        data.crop_size,
        ignore_index,
        data.scales,
        data.hflip,
        data.mean,
        data.std,
        short_edges=data.short_edges,
        max_size=data.max_size,
        single_category_max_area=data.single_category_max_area,
        color_aug_ssd=data.color_aug_ssd,
    )


def build_datasets(cfg: SegmentationConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training split (augmented) and the validation split (whole images, normalised)."""
    data = cfg.data
    val_options = {**data.options, **data.val_options}
    probe = build_dataset(data.dataset, data.root, data.val_split, None, **val_options)
    train_set = build_dataset(
        data.dataset, data.root, data.train_split, recipe_train_transforms(data, probe.ignore_index), **data.options
    )
    val_set = build_dataset(
        data.dataset, data.root, data.val_split, eval_transforms(data.mean, data.std), **val_options
    )
    return train_set, val_set


def check_data(cfg: SegmentationConfig, progress: bool = True) -> dict[str, list[BadFile]]:
    """Read every file of the training and validation splits fully; returns the bad ones per split
    (``fapn train --check-data``)."""
    train_set, val_set = build_datasets(cfg)
    return {
        cfg.data.train_split: check_files(train_set, progress, f"check {cfg.data.train_split}"),
        cfg.data.val_split: check_files(val_set, progress, f"check {cfg.data.val_split}"),
    }


def scan_splits(
    cfg: SegmentationConfig,
    train_set: SegmentationDataset,
    val_set: SegmentationDataset,
    out: Path,
    is_main: bool,
    progress: bool,
) -> tuple[SegmentationDataset, SegmentationDataset, dict[str, int]]:
    """The start-up check: headers of every file (a bad one stops the run before it starts), or with
    ``data.skip_unreadable`` a full read that drops the bad samples and lists them in ``skipped_files.txt``."""
    splits = {cfg.data.train_split: train_set, cfg.data.val_split: val_set}
    skipped: dict[str, int] = {}
    if not cfg.data.skip_unreadable:
        bad = {split: check_headers(ds) for split, ds in splits.items()}
        count = sum(len(b) for b in bad.values())
        if count:
            listing = "\n".join(f"{split}:\n{format_bad_files(b)}" for split, b in bad.items() if b)
            raise SampleError(
                f"{count} unreadable file(s) in {cfg.data.dataset} ({cfg.data.root}):\n{listing}\nfix or remove them, "
                "or train without them with --set data.skip_unreadable=true (they are then listed in "
                "skipped_files.txt of the run folder)"
            )
        return train_set, val_set, skipped
    kept = {}
    for split, ds in splits.items():
        bad_files = check_files(ds, progress and is_main, f"check {split}")
        kept[split] = without_samples(ds, bad_files)
        skipped[split] = len(bad_files)
        if bad_files and is_main:
            write_report(bad_files, out / "skipped_files.txt", split)
            print(
                f"fapn train: skipping {len(bad_files)} unreadable {split} sample(s) (data.skip_unreadable), "
                f"listed in {out / 'skipped_files.txt'}:\n{format_bad_files(bad_files)}",
                file=sys.stderr,
                flush=True,
            )
    return kept[cfg.data.train_split], kept[cfg.data.val_split], skipped


def describe_split(split: str, dataset: SegmentationDataset, cfg: SegmentationConfig, skipped: dict[str, int]) -> str:
    where = f", {cfg.data.root}" if cfg.data.root else ""
    text = f"{cfg.data.dataset} {split}, {len(dataset)} images, {dataset.num_classes} classes{where}"
    if skipped.get(split):
        text += f" ({skipped[split]} unreadable skipped, see skipped_files.txt)"
    return text
