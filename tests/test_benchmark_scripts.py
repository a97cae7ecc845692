"""The benchmark scripts that cannot run here for real: checked end to end on tiny sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_dry_run_on_the_cpu(tmp_path: Path, capsys) -> None:
    """benchmarks/gpu.py measures on CUDA; its --dry-run runs every part on the CPU with the same JSON."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _script("gpu").main(["--dry-run", "--out", str(tmp_path / "gpu.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["dry_run"] and result["device"].startswith("CPU dry run")
    assert {(r["backbone"], r["variant"]) for r in result["fps"]} == {
        (b, v) for b in ("resnet18", "resnet34") for v in ("fpn", "fapn")
    }
    assert all(r["fps"] > 0 for r in result["fps"])
    assert len(result["deform_conv"]) == 4 and all(r["torchvision_ms"] > 0 for r in result["deform_conv"])
    assert [r["variant"] for r in result["train_step"]] == ["fpn", "fapn"]
    assert "FPS" in capsys.readouterr().out


def test_cpu_paths_tables_from_a_result_file(tmp_path: Path, capsys) -> None:
    result = {
        "cpu": {"model": "Some CPU", "cores": 2, "flags": ["avx2"], "torch": "2", "torch_cpu_capability": "AVX2"},
        "load_before": 0.1,
        "load_after": 0.2,
        "op": [
            {
                "shape": "s",
                "threads": 1,
                "dtype": "float32",
                "layout": "contiguous",
                "pass": "forward",
                "dense_ms": 10.0,
                "deform_ms": 12.0,
                "deform_over_dense": 1.2,
            }
        ],
        "train": [{"threads": 1, "precision": "float32", "fpn_ms": 100.0, "fapn_ms": 125.0, "fapn_over_fpn": 1.25}],
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert _script("cpu_paths").main(["--markdown", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Some CPU, 2 cores, flags avx2" in out
    assert "| s | 1 | float32 | contiguous | 10.0 | 12.0 | 1.20 |" in out
    assert "| 1 | float32 | 100 | 125 | 1.25 |" in out
