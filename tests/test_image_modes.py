"""Images of every bit depth and mode are read as the 8-bit RGB picture they show, or refused by name:
16-bit grey scaled (not clipped), palette with transparency and RGBA converted, floating point refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.data import read_image
from fapn.data.base import image_to_rgb
from fapn.inference import Segmenter, load_image


def _grey_8bit() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 20), dtype=np.uint8)


def _save_16bit(path: Path) -> np.ndarray:
    """A 16-bit grey PNG whose values are the 8-bit picture times 257 (so 255 -> 65535); returns the 8-bit one."""
    grey = _grey_8bit()
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")  # the case being tested: Pillow's 16-bit grey mode
    return grey


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey = _save_16bit(tmp_path / "deep.png")
    expected = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png").permute(1, 2, 0).numpy(), expected)


def test_16bit_values_round_to_nearest_8bit() -> None:
    values = np.array([[0, 128, 129, 257, 385, 386, 65535]], dtype=np.uint16)
    rgb = image_to_rgb(Image.fromarray(values))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 0, 1, 1, 1, 2, 255]])


def test_32bit_integer_image_in_16bit_range_is_scaled_and_beyond_it_refused() -> None:
    values = np.array([[0, 257, 65535]], dtype=np.int32)
    np.testing.assert_array_equal(image_to_rgb(Image.fromarray(values, mode="I"))[..., 1], [[0, 1, 255]])
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        image_to_rgb(Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I"))


def test_segmenter_predicts_a_16bit_image_as_its_8bit_twin(tmp_path: Path) -> None:
    grey = _save_16bit(tmp_path / "deep.png")
    torch.manual_seed(0)
    seg = Segmenter(torch.nn.Conv2d(3, 5, 1), 5)
    expected = seg.predict(np.repeat(grey[..., None], 3, axis=2))
    assert len(np.unique(expected)) > 2  # a prediction that can tell a scaled image from a clipped one
    np.testing.assert_array_equal(seg.predict(tmp_path / "deep.png"), expected)
    with Image.open(tmp_path / "deep.png") as img:
        np.testing.assert_array_equal(seg.predict(img), expected)


def test_palette_with_transparency_and_rgba_keep_their_colours(tmp_path: Path) -> None:
    palette_image = Image.new("P", (4, 2))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    palette_image.info["transparency"] = b"\x00"  # colour 0 transparent, given as bytes
    palette_image.save(tmp_path / "palette.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "palette images with transparency" warning must not fire
        rgb = load_image(tmp_path / "palette.png")
    assert rgb.shape == (2, 4, 3)
    assert tuple(rgb[0, 1]) == (200, 100, 50) and tuple(rgb[0, 0]) == (10, 20, 30)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (40, 50, 60)
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])


def test_floating_point_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), mode="F").save(path)
    with pytest.raises(ValueError, match=r"float\.tif.*floating-point"):
        load_image(path)
    with pytest.raises(ValueError, match=r"float\.tif.*floating-point"):
        read_image(path)
