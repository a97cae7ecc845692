"""Procedurally generated street scenes: deterministic by seed, any size, no files.

Each scene has sky, buildings with a jagged skyline, a road in perspective with sidewalks, trees, and the
things FaPN claims to segment better: one- to three-pixel poles with small signs, and cars whose size shrinks
towards the horizon (distant cars are a few pixels). Every class has a colour that varies per image and per
pixel (noise), so a network must use shape and context, and labels have exactly sharp boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from fapn.data.base import DatasetInfo, SegmentationDataset, Transform

__all__ = ["synthetic_streets", "SyntheticStreets", "SYNTHETIC_INFO", "render_street_scene"]

SYNTHETIC_INFO = DatasetInfo(
    name="synthetic_streets",
    class_names=("sky", "building", "road", "sidewalk", "vegetation", "pole", "sign", "car"),
    palette=(
        (70, 130, 180),
        (70, 70, 70),
        (128, 64, 128),
        (244, 35, 232),
        (107, 142, 35),
        (153, 153, 153),
        (220, 220, 0),
        (0, 0, 142),
    ),
    ignore_index=255,
)
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, POLE, SIGN, CAR = range(8)

# Mean colour of each class in the rendered image; the renderer jitters it per image and per pixel.
_BASE_COLOURS = np.array(
    [
        (150, 180, 215),
        (125, 110, 100),
        (95, 95, 100),
        (165, 150, 140),
        (70, 120, 55),
        (135, 135, 135),
        (215, 190, 40),
        (170, 40, 40),
    ],
    dtype=np.float32,
)
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def render_street_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image uint8 [H, W, 3], label uint8 [H, W])``.

    Example:
        >>> image, label = render_street_scene(64, 96, np.random.default_rng(0))
        >>> image.shape, label.shape, int(label.max()) <= 7
        ((64, 96, 3), (64, 96), True)
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    label = np.full((height, width), SKY, dtype=np.uint8)
    horizon = rng.uniform(0.38, 0.52) * height
    vanish_x = rng.uniform(0.35, 0.65) * width

    # Buildings: a jagged skyline of blocks standing on the horizon.
    x = 0.0
    while x < width:
        block = rng.uniform(0.08, 0.25) * width
        top = horizon - rng.uniform(0.15, 0.45) * height
        label[(xs >= x) & (xs < x + block) & (ys >= top) & (ys < horizon + 1)] = BUILDING
        x += block
    # Trees: blobs on the horizon.
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0, width), horizon - rng.uniform(0.0, 0.12) * height
        r = rng.uniform(0.04, 0.1) * height
        label[(xs - cx) ** 2 + ((ys - cy) * 1.3) ** 2 < r**2] = VEGETATION
    # Ground: road in perspective between two sidewalks.
    below = ys >= horizon
    depth = np.clip((ys - horizon) / max(height - horizon, 1.0), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom
    road_half = (0.02 + rng.uniform(0.35, 0.5) * depth) * width
    walk_half = road_half + (0.01 + rng.uniform(0.15, 0.3) * depth) * width
    offset = np.abs(xs - vanish_x)
    label[below & (offset < walk_half)] = SIDEWALK
    label[below & (offset < road_half)] = ROAD
    label[below & (offset >= walk_half)] = VEGETATION
    # Cars on the road, far (small) to near (large), drawn far first.
    for d in np.sort(rng.uniform(0.05, 0.9, size=rng.integers(1, 5))):
        y_bottom = horizon + d * (height - horizon)
        car_w = max(2.0, (0.05 + 0.25 * d) * width * 0.6)
        car_h = car_w * rng.uniform(0.5, 0.7)
        half_road = (0.02 + 0.4 * d) * width
        cx = vanish_x + rng.uniform(-0.7, 0.7) * half_road
        label[(np.abs(xs - cx) < car_w / 2) & (ys <= y_bottom) & (ys > y_bottom - car_h)] = CAR
    # Poles with signs along the sidewalk edges: 1-3 px wide, whatever the image size.
    for _ in range(rng.integers(2, 6)):
        d = rng.uniform(0.1, 1.0)
        side = rng.choice([-1.0, 1.0])
        base_y = horizon + d * (height - horizon)
        base_x = vanish_x + side * ((0.02 + 0.42 * d) * width + 0.01 * width)
        pole_w = float(rng.integers(1, 4))
        pole_h = (0.15 + 0.5 * d) * height
        top = base_y - pole_h
        label[(xs >= base_x) & (xs < base_x + pole_w) & (ys >= top) & (ys <= base_y)] = POLE
        if rng.random() < 0.7:
            s = max(3.0, 0.04 * d * height + 2)
            label[(np.abs(xs - (base_x + pole_w / 2)) < s) & (ys >= top) & (ys < top + 1.4 * s)] = SIGN

    colours = _BASE_COLOURS * rng.uniform(0.8, 1.2, size=(1, 3)).astype(np.float32)
    colours = colours + rng.normal(0, 12, size=colours.shape).astype(np.float32)
    image = colours[label]
    shade = (1.0 - 0.25 * (ys / height))[..., None]  # light falls off towards the bottom
    image = image * shade + rng.normal(0, 14, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticStreets(SegmentationDataset):
    """``num_images`` street scenes of ``size`` (height, width); scene ``i`` depends only on ``(seed, split, i)``.

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint seeds).
        size: ``(height, width)``.
        num_images: length of the split.
        seed: base seed.
        transforms: ``(image, mask) -> (image, mask)``.
    """

    def __init__(
        self,
        split: str = "train",
        size: Sequence[int] = (128, 160),
        num_images: int = 200,
        seed: int = 0,
        transforms: Transform | None = None,
    ) -> None:
        if split not in _SPLIT_OFFSETS:
            raise ValueError(f"synthetic split must be one of {list(_SPLIT_OFFSETS)}, got {split!r}")
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"synthetic size must be (height, width) with both >= 32, got {tuple(size)}")
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        super().__init__([], SYNTHETIC_INFO, None, transforms)
        self.split, self.size, self.num_images, self.seed = split, (int(size[0]), int(size[1])), num_images, seed

    def __len__(self) -> int:
        return self.num_images

    def sample_name(self, index: int) -> str:
        return f"synthetic_{self.split}_{index:05d}"

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _SPLIT_OFFSETS[self.split], index])
        return render_street_scene(self.size[0], self.size[1], rng)

    def load_label(self, index: int) -> np.ndarray:
        return self.render(index)[1].astype(np.int64)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        image, label = self.render(index)
        return (
            tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            tv_tensors.Mask(torch.from_numpy(label.astype(np.int64))),
        )


def synthetic_streets(
    root: object = None,
    split: str = "train",
    transforms: Transform | None = None,
    size: Sequence[int] = (128, 160),
    num_images: int = 200,
    seed: int = 0,
) -> SyntheticStreets:
    """The built-in synthetic dataset (``root`` is ignored; it exists for a uniform builder signature).

    Example:
        >>> ds = synthetic_streets(split="val", size=(64, 96), num_images=4)
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), ds.num_classes
        ((3, 64, 96), (64, 96), 8)
    """
    return SyntheticStreets(split, size, num_images, seed, transforms)
