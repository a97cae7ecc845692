"""The small-object benchmark's bookkeeping (benchmarks/small_objects.py): the flat metric names of its result
files and the report's paired differences, on fabricated results (the study itself is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports camvid_ablation's statistics
    try:
        spec = importlib.util.spec_from_file_location(
            "small_objects_benchmark", ROOT / "benchmarks" / "small_objects.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_flat_names_say_small(bench) -> None:
    metrics = {
        "bbox": {"AP": 10.0, "APs": 5.0, "APm": 20.0, "APl": float("nan")},
        "segm": {"AP": 12.0, "APs": 6.0, "APm": 21.0, "APl": float("nan")},
        "panoptic": {
            "All_pq": 30.0,
            "Things_pq": 20.0,
            "Things_small_pq": 11.0,
            "Things_small_n": 3,
            "Stuff_sq": 80.0,
            "Things_large_pq": 0.0,
            "Things_large_n": 0,
        },
    }
    flat = bench.flatten(metrics)
    assert flat["bbox_AP_small"] == 5.0 and flat["segm_AP_medium"] == 21.0 and flat["bbox_AP_large"] is None
    assert flat["PQ"] == 30.0 and flat["PQ_things"] == 20.0 and flat["SQ_stuff"] == 80.0
    assert flat["PQ_things_small"] == 11.0 and flat["categories_things_small"] == 3
    assert flat["PQ_things_large"] is None  # no large segment at all: no figure (the metric says PQ 0 over n=0)


def fake(bench, task: str, neck: str, seed: int, value: float) -> dict:
    keys = [key for _, key in bench.REPORT_ROWS[task]]
    return {
        "task": task,
        "neck": neck,
        "seed": seed,
        "iterations": 800,
        "batch_size": 4,
        "seconds_per_iteration": 3.5,
        "machine": {"threads": 1, "jobs": 2, "processor": "x86_64"},
        "data": {
            "train": {"images": 256},
            "val": {"images": 64, "objects": 300, "small": 230, "medium": 70, "large": 0},
        },
        **dict.fromkeys(keys, value),
    }


def test_report_pairs_fapn_and_fpn_by_seed(bench, tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    values = {("fpn", 0): 10.0, ("fapn", 0): 14.0, ("fpn", 1): 12.0, ("fapn", 1): 14.0, ("fapn", 2): 50.0}
    for (neck, seed), value in values.items():
        path = bench.result_path(tmp_path, "detection", neck, seed)
        path.write_text(json.dumps(fake(bench, "detection", neck, seed, value)))
    runs = bench.load_results(tmp_path)
    assert bench.paired(runs, "detection", "bbox_AP_small") == [4.0, 2.0]  # seed 2 has no FPN partner
    report = bench.markdown_report(runs)
    assert "| Faster R-CNN | box AP small | 11.0 ± 1.4 | 26.0 ± 20.8 | 2 | +4.0, +2.0 | +3.0 |" in report
    # t(0.975, 1) = 12.71; std of (4, 2) = 1.414; half-width 12.71 * 1.414 / sqrt(2) = 12.7
    assert "95% [-9.7, +15.7]: not beyond seed noise" in report
    (tmp_path / "broken_seed0.json").write_text("{")
    with pytest.raises(SystemExit, match=r"broken_seed0\.json"):
        bench.load_results(tmp_path)
