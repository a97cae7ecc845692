"""Every dataset on a small fixture in its real layout, plus the errors a user can meet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.data import (
    ADE20K_INFO,
    CITYSCAPES_LABEL_TO_TRAIN,
    COCO_STUFF_INFO,
    SampleError,
    ade20k,
    build_dataset,
    camvid,
    cityscapes,
    cityscapes_train_to_label_ids,
    coco_stuff,
    image_folder,
    synthetic_streets,
)
from fapn.data.coco_stuff import COCO_STUFF_RAW_IDS


def write_rgb(path: Path, height: int = 8, width: int = 12, seed: int = 0, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return array


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


# ---------------------------------------------------------------- Cityscapes
def make_cityscapes(root: Path, split: str = "val") -> dict[str, np.ndarray]:
    labels = {}
    for i, city in enumerate(["aachen", "bochum"]):
        stem = f"{city}_000000_00001{i}"
        write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
        raw = np.random.default_rng(10 + i).integers(0, 34, (8, 12))
        write_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", raw)
        labels[stem] = raw
    return labels


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    raw = make_cityscapes(tmp_path)
    ds = cityscapes(tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.ignore_index == 255
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 8, 12)
    expected = np.vectorize(CITYSCAPES_LABEL_TO_TRAIN.get)(raw["aachen_000000_000010"])
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_cityscapes_table_equals_the_official_one() -> None:
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    for label in labels.labels:
        if label.id < 0:
            continue
        official = 255 if label.trainId in (255, -1) else label.trainId
        assert CITYSCAPES_LABEL_TO_TRAIN[label.id] == official, label.name
        if official != 255:
            assert cityscapes_train_to_label_ids(np.array([official]))[0] == label.id


# ---------------------------------------------------------------- COCO-Stuff, ADE20K
def test_coco_stuff_remaps_182_raw_ids_to_171_classes(tmp_path: Path) -> None:
    write_rgb(tmp_path / "images" / "val2017" / "000000000139.jpg", fmt="JPEG")
    raw = np.array([[0, 11 + 1, 91, 181, 255, 90 + 2]] * 2)  # 12 and 92 are used ids, 255 unlabelled
    write_label(
        tmp_path / "annotations" / "val2017" / "000000000139.png", np.pad(raw, ((0, 6), (0, 6)), constant_values=255)
    )
    ds = coco_stuff(tmp_path, "val2017")
    assert ds.num_classes == 171 == len(COCO_STUFF_INFO.class_names)
    _, mask = ds[0]
    row = mask[0, :6].tolist()
    assert row == [
        0,
        COCO_STUFF_RAW_IDS.index(12),
        COCO_STUFF_RAW_IDS.index(91),
        170,
        255,
        COCO_STUFF_RAW_IDS.index(92),
    ]
    assert COCO_STUFF_INFO.class_names[0] == "person" and COCO_STUFF_INFO.class_names[170] == "wood"
    assert COCO_STUFF_INFO.class_names[COCO_STUFF_RAW_IDS.index(91)] == "banner"  # first stuff class (COCO id 92)


def test_coco_stuff_rejects_an_unused_raw_id(tmp_path: Path) -> None:
    write_rgb(tmp_path / "images" / "val2017" / "a.jpg", fmt="JPEG")
    write_label(tmp_path / "annotations" / "val2017" / "a.png", np.full((8, 12), 11))  # COCO id 12: unused
    with pytest.raises(SampleError, match=r"a\.png.*\[11\]"):
        coco_stuff(tmp_path, "val2017")[0]


def test_ade20k_ignores_zero_and_shifts_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    write_rgb(root / "images" / "validation" / "ADE_val_00000001.jpg", fmt="JPEG")
    label = np.zeros((8, 12), dtype=np.uint8)
    label[0, :3] = [1, 150, 0]
    write_label(root / "annotations" / "validation" / "ADE_val_00000001.png", label)
    ds = ade20k(root, "validation")
    _, mask = ds[0]
    assert mask[0, :3].tolist() == [0, 149, 255]
    assert ds.num_classes == 150 and ADE20K_INFO.class_names[0] == "wall"


# ---------------------------------------------------------------- CamVid, folder
def make_camvid(root: Path) -> None:
    for split in ("train", "val"):
        for i in range(2):
            write_rgb(root / split / f"0001TP_00{i}.png", seed=i)
            write_label(root / f"{split}annot" / f"0001TP_00{i}.png", np.random.default_rng(i).integers(0, 12, (8, 12)))


def test_camvid_segnet_layout(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    ds = camvid(tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.ignore_index == 11
    _, mask = ds[1]
    np.testing.assert_array_equal(mask.numpy(), np.random.default_rng(1).integers(0, 12, (8, 12)))


def test_camvid_real_data_when_present() -> None:
    root = Path(os.environ.get("FAPN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "camvid-half"
    if not root.is_dir():
        pytest.skip(f"CamVid not found at {root} (set FAPN_DATA)")
    ds = camvid(root, "val")
    assert len(ds) == 101 and ds.info.class_names[2] == "Pole"
    image, mask = ds[0]
    assert tuple(image.shape) == (3, 180, 240) and int(mask.max()) <= 11


def test_image_folder_with_class_list(tmp_path: Path) -> None:
    (tmp_path / "classes.yaml").write_text(
        "classes: [background, crack]\npalette: [[0, 0, 0], [255, 0, 0]]\nignore_index: 9\n"
    )
    write_rgb(tmp_path / "images" / "train" / "a.jpg", fmt="JPEG")
    label = np.zeros((8, 12))
    label[2:4] = 1
    label[0] = 9
    write_label(tmp_path / "masks" / "train" / "a.png", label)
    ds = image_folder(tmp_path, "train")
    assert ds.info.class_names == ("background", "crack") and ds.ignore_index == 9
    assert ds.info.palette[1] == (255, 0, 0)
    np.testing.assert_array_equal(ds[0][1].numpy(), label)
    ds2 = build_dataset("folder", tmp_path, "train")
    assert len(ds2) == 1


# ---------------------------------------------------------------- errors
def test_missing_folder_empty_split_and_missing_label(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder not found"):
        camvid(tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(ValueError, match="empty split"):
        camvid(tmp_path, "train")
    write_rgb(tmp_path / "train" / "lonely.png")
    with pytest.raises(FileNotFoundError, match=r"lonely\.png has no label.*trainannot/lonely\.png"):
        camvid(tmp_path, "train")


def test_label_value_outside_class_set_names_the_file(tmp_path: Path) -> None:
    write_rgb(tmp_path / "val" / "x.png")
    write_label(tmp_path / "valannot" / "x.png", np.full((8, 12), 40))
    with pytest.raises(SampleError, match=r"valannot/x\.png.*\[40\].*0\.\.10"):
        camvid(tmp_path, "val")[0]


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_label(tmp_path / "valannot" / "bad.png", np.zeros((8, 12)))
    with pytest.raises(SampleError, match=r"cannot read image .*bad\.png"):
        camvid(tmp_path, "val")[0]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_rgb(tmp_path / "val" / "y.png", 8, 12)
    write_label(tmp_path / "valannot" / "y.png", np.zeros((9, 12)))
    with pytest.raises(SampleError, match=r"y\.png is 12x9 but image .*y\.png is 12x8"):
        camvid(tmp_path, "val")[0]


def test_unknown_dataset_and_missing_root(monkeypatch) -> None:
    with pytest.raises(ValueError, match="valid datasets"):
        build_dataset("pascal", "x", "train")
    monkeypatch.delenv("FAPN_DATA", raising=False)
    with pytest.raises(ValueError, match="FAPN_DATA"):
        build_dataset("camvid", None, "train")


# ---------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_has_thin_structures() -> None:
    a = synthetic_streets(split="train", size=(96, 128), num_images=3, seed=5)
    b = synthetic_streets(split="train", size=(96, 128), num_images=3, seed=5)
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    val = synthetic_streets(split="val", size=(96, 128), num_images=1, seed=5)
    assert not torch.equal(a[0][1], val[0][1])
    masks = torch.stack([synthetic_streets(size=(96, 128), num_images=20)[i][1] for i in range(20)])
    counts = torch.bincount(masks.flatten(), minlength=8)
    assert (counts > 0).all(), counts  # every class occurs
    pole_fraction = counts[5] / masks.numel()
    assert 0.001 < pole_fraction < 0.05  # poles are thin
    # Poles are at most 3 pixels wide: no row has a run of 5 pole pixels... unless two poles touch (rare).
    runs = (masks == 5).unfold(-1, 5, 1).all(-1).float().mean()
    assert runs < 0.001
