"""The synthetic COCO generator's small-object regime: the fraction of small objects it promises."""

from __future__ import annotations

import json

import pytest

from fapn.data.synthetic_coco import SMALL_OBJECT_REGIME, make_synthetic_coco

pytest.importorskip("pycocotools")


def _areas(path):
    return [a["area"] for a in json.loads(path.read_text())["annotations"]]


def test_small_object_regime_holds_mostly_small_objects(tmp_path):
    regime = make_synthetic_coco(tmp_path / "small", 16, seed=0, **SMALL_OBJECT_REGIME)
    areas = _areas(regime["instances"])
    small = sum(a < 32**2 for a in areas) / len(areas)
    assert small >= 0.4, f"{small:.0%} of {len(areas)} objects are small"
    default = make_synthetic_coco(tmp_path / "default", 16, seed=0)
    default_small = sum(a < 32**2 for a in _areas(default["instances"])) / len(_areas(default["instances"]))
    assert default_small < small  # the regime, not the generator's default, makes them small
    assert len(areas) / 16 > 3  # several objects per image


def test_default_data_unchanged_by_the_regime_parameters(tmp_path):
    """``small_fraction=0`` draws no extra random numbers: a seed gives the files it gave before."""
    a = make_synthetic_coco(tmp_path / "a", 3, seed=5)
    b = make_synthetic_coco(tmp_path / "b", 3, seed=5, small_fraction=0.0, small_max_size_fraction=0.3)
    assert a["instances"].read_text() == b["instances"].read_text()


def test_small_fraction_must_be_a_probability(tmp_path):
    with pytest.raises(ValueError, match="small_fraction"):
        make_synthetic_coco(tmp_path, 1, small_fraction=1.5)
