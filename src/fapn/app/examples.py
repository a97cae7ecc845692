"""Example images for the app: the built-in synthetic street scenes, and CamVid val frames when ``FAPN_DATA``
holds them, each with its ground truth.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     pairs = write_examples(folder, synthetic=2, camvid=0, size=(64, 96))
    ...     [(image.name, label.name) for image, label in pairs]
    [('synthetic_street_0.png', 'synthetic_street_0_labels.png'), ('synthetic_street_1.png', 'synthetic_street_1_labels.png')]
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fapn.data.build import DEFAULT_FOLDERS
from fapn.data.camvid import camvid as camvid_dataset
from fapn.data.synthetic import synthetic_streets

__all__ = ["write_examples", "camvid_examples"]


def camvid_examples(count: int) -> list[tuple[Path, Path]]:
    """The first ``count`` CamVid val frames and their label files under ``$FAPN_DATA/camvid-half``, or none when
    ``FAPN_DATA`` is unset or does not hold that folder."""
    base = os.environ.get("FAPN_DATA")
    root = Path(base) / DEFAULT_FOLDERS["camvid"] if base else None
    if count < 1 or root is None or not (root / "val").is_dir():
        return []
    try:
        samples = camvid_dataset(root, "val").samples
    except (FileNotFoundError, ValueError):
        return []
    return [(image, label) for image, label in samples[:count] if label is not None]


def write_examples(
    folder: str | os.PathLike[str], synthetic: int = 3, camvid: int = 3, size: tuple[int, int] = (256, 320)
) -> list[tuple[Path, Path]]:
    """Write the example images and their ground truths into ``folder``.

    Args:
        folder: where to write (created).
        synthetic: how many synthetic street scenes (the val split of ``fapn demo``'s data, seed 0).
        camvid: how many CamVid val frames to copy (when ``FAPN_DATA`` holds CamVid).
        size: ``(height, width)`` of the synthetic scenes.

    Returns:
        ``(image, ground truth)`` file pairs.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    scenes = synthetic_streets(split="val", size=size, num_images=max(synthetic, 1))
    for index in range(synthetic):
        image, label = scenes.render(index)
        image_path, label_path = out / f"synthetic_street_{index}.png", out / f"synthetic_street_{index}_labels.png"
        Image.fromarray(image).save(image_path)
        Image.fromarray(label.astype(np.uint8)).save(label_path)
        pairs.append((image_path, label_path))
    for image_source, label_source in camvid_examples(camvid):
        image_path = out / f"camvid_{image_source.stem}{image_source.suffix}"
        label_path = out / f"camvid_{image_source.stem}_labels{label_source.suffix}"
        shutil.copyfile(image_source, image_path)
        shutil.copyfile(label_source, label_path)
        pairs.append((image_path, label_path))
    return pairs
