"""A semantic segmentation dataset: a list of (image, label) files, a class list and a label mapping.

Every dataset of :mod:`fapn.data` is a :class:`SegmentationDataset` built from the files of its own layout.
Samples are ``(image, mask)`` with ``image`` a ``tv_tensors.Image`` (uint8 ``[3, H, W]``) and ``mask`` a
``tv_tensors.Mask`` (int64 ``[H, W]``, train ids, ``ignore_index`` for ignored pixels), passed through
``transforms`` when given.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

__all__ = [
    "SegmentationDataset",
    "DatasetInfo",
    "SampleError",
    "image_to_rgb",
    "read_image",
    "read_label",
    "label_lut",
    "default_palette",
    "require_dir",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel mean on ``[0, 1]`` images (torchvision's), the normalisation every backbone here expects;
the one definition in the library (transforms, configs, inference and checkpoints use it)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel standard deviation, see :data:`IMAGENET_MEAN`."""

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]


class SampleError(ValueError):
    """A sample that cannot be used (unreadable image, label out of the class set); the message names the file."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset needs to know about it (stored in checkpoints)."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> dict:
        """The checkpoint's ``dataset`` entry."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "mean": list(mean),
            "std": list(std),
        }


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours (golden-ratio hues) for datasets that ship none, and for classes beyond
    a given palette; the one default palette of the library (``fapn.visualize`` pads with it too). It lives in
    :mod:`fapn.data` because datasets store it in their :class:`DatasetInfo` and ``fapn.data`` sits below
    ``fapn.visualize``, so nothing has to import upward to reach it [ours]. Never black: black marks ignored
    pixels in pictures.

    Example:
        >>> default_palette(2)
        ((153, 53, 53), (0, 59, 204))
    """
    colours = []
    for i in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.35 * (i % 2), 0.6 + 0.4 * (i % 3) / 2)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colours)


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` naming it and ``what`` was expected there if missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """The ``[H, W, 3]`` uint8 RGB picture of a PIL image of any mode: the one conversion every image reader uses.

    16-bit grey (``I;16*``, and 32-bit ``I`` holding values in 0..65535, as 16-bit PNGs may open) is scaled to
    8 bits, not clipped as Pillow's ``convert("RGB")`` does; palette images (with or without transparency),
    grey, RGBA (alpha dropped), CMYK and the rest go through Pillow's conversion.

    Raises:
        ValueError: a floating-point image (mode ``F``: no fixed range to scale from), an ``I`` image with values
            outside 0..65535, or a mode Pillow cannot convert to RGB.

    Example:
        >>> image_to_rgb(Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)))[0, :, 0]
        array([  0, 128, 255], dtype=uint8)
    """
    mode = image.mode
    if mode == "F":
        raise ValueError("a floating-point (mode F) image: save it with 8 or 16 bits per channel")
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"a 32-bit integer image with values {values.min()}..{values.max()}, outside 0..65535: "
                "save it with 8 or 16 bits per channel"
            )
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257): 65535 -> 255, 257 k -> k
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the route Pillow asks for (else it warns); alpha is dropped below
    return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike[str]) -> tv_tensors.Image:
    """An image file of any bit depth and mode (see :func:`image_to_rgb`) as a uint8 ``tv_tensors.Image``
    ``[3, H, W]``; :class:`SampleError` naming the file if it cannot be decoded or converted."""
    try:
        with Image.open(path) as img:
            array = image_to_rgb(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise SampleError(f"cannot read image {path}: {err}") from err
    return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))


def read_label(path: str | os.PathLike[str]) -> np.ndarray:
    """A single-channel index PNG as a ``[H, W]`` integer array; :class:`SampleError` naming the file if it
    cannot be decoded or is not single-channel."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise SampleError(
                    f"label {path} is a {img.mode} image; expected a single-channel index PNG (mode L, P or I)"
                )
            array = np.asarray(img)
    except SampleError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise SampleError(f"cannot read label {path}: {err}") from err
    return array


def label_lut(mapping: dict[int, int], size: int = 256, invalid: int = -1) -> np.ndarray:
    """A lookup table ``raw label -> train id``; raw values absent from ``mapping`` map to ``invalid``."""
    lut = np.full(size, invalid, dtype=np.int64)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


class SegmentationDataset(torch.utils.data.Dataset):
    """Image/label file pairs of one split.

    Args:
        samples: ``(image_path, label_path)`` pairs; ``label_path`` may be ``None`` (unlabelled images, for
            prediction only: the mask is then all ``ignore_index``).
        info: class names, palette and ignore index.
        lut: raw label value -> train id (``ignore_index`` for ignored values, ``-1`` for values that must not
            occur); ``None`` if labels already hold train ids.
        transforms: ``(image, mask) -> (image, mask)``, e.g. :func:`fapn.data.transforms.train_transforms`.

    Example:
        >>> ds = SegmentationDataset(
        ...     [("a.png", "a_label.png")], DatasetInfo("mine", ("bg", "fg"), ((0, 0, 0), (255, 0, 0)))
        ... )
        >>> len(ds)
        1
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path | None]],
        info: DatasetInfo,
        lut: np.ndarray | None = None,
        transforms: Transform | None = None,
    ) -> None:
        self.samples = [(Path(i), Path(m) if m is not None else None) for i, m in samples]
        self.info = info
        self.lut = lut
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    def sample_name(self, index: int) -> str:
        """The image's file name without extension (predictions are saved under it)."""
        return self.samples[index][0].stem

    def load_label(self, index: int) -> np.ndarray:
        """Train-id label of sample ``index`` (``[H, W]`` int64), checked against the class set."""
        image_path, label_path = self.samples[index]
        if label_path is None:
            with Image.open(image_path) as img:
                width, height = img.size
            return np.full((height, width), self.ignore_index, dtype=np.int64)
        raw = read_label(label_path).astype(np.int64)
        if self.lut is not None:
            if raw.min() < 0 or raw.max() >= len(self.lut):
                bad = raw.max() if raw.max() >= len(self.lut) else raw.min()
                raise SampleError(
                    f"label {label_path} has value {bad}, outside the label table (0..{len(self.lut) - 1})"
                )
            label = self.lut[raw]
            if (label < 0).any():
                bad_values = np.unique(raw[label < 0]).tolist()
                raise SampleError(
                    f"label {label_path} has value(s) {bad_values[:10]} that are not in the class set of "
                    f"{self.info.name}"
                )
        else:
            label = raw
        valid = (label >= 0) & (label < self.num_classes) | (label == self.ignore_index)
        if not valid.all():
            bad_values = np.unique(label[~valid]).tolist()
            raise SampleError(
                f"label {label_path} has value(s) {bad_values[:10]} outside the class set: expected "
                f"0..{self.num_classes - 1} or the ignore index {self.ignore_index}"
            )
        return label

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed sample ``index``."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        label = self.load_label(index)
        if label.shape != tuple(image.shape[-2:]):
            raise SampleError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                f"{image.shape[-1]}x{image.shape[-2]} (width x height); they must match"
            )
        return image, tv_tensors.Mask(torch.from_numpy(label))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.load(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask


def pair_files(
    image_dir: Path,
    label_dir: Path,
    image_pattern: str,
    label_name: Callable[[Path], str],
    what: str,
    recursive: bool = False,
) -> list[tuple[Path, Path]]:
    """Pair every image matching ``image_pattern`` under ``image_dir`` with ``label_dir / label_name(image)``
    (same sub-folder when ``recursive``).

    Raises:
        FileNotFoundError: a missing folder, or an image without its label (both named).
        ValueError: no image at all (an empty split).
    """
    require_dir(image_dir, f"{what} images")
    require_dir(label_dir, f"{what} labels")
    images = sorted(image_dir.rglob(image_pattern) if recursive else image_dir.glob(image_pattern))
    if not images:
        raise ValueError(f"{what}: no images matching {image_pattern!r} in {image_dir} (empty split?)")
    pairs = []
    for image in images:
        relative_parent = image.parent.relative_to(image_dir)
        label = label_dir / relative_parent / label_name(image)
        if not label.is_file():
            raise FileNotFoundError(f"{what}: image {image} has no label: expected {label}")
        pairs.append((image, label))
    return pairs


def images_annotations_pairs(root: Path, split: str, what: str) -> list[tuple[Path, Path]]:
    """The SceneParsing layout that ADE20K and COCO-Stuff share: ``root/images/{split}/NAME.jpg`` paired with
    ``root/annotations/{split}/NAME.png`` (see :func:`pair_files` for the errors; ``what`` names the split)."""
    return pair_files(
        root / "images" / split, root / "annotations" / split, "*.jpg", lambda p: p.with_suffix(".png").name, what
    )
