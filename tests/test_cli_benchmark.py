"""``fapn benchmark``: MAC counts against the notes, interleaved timing, ratios, and the command itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fapn.ops
from fapn.cli.main import main
from fapn.inference.benchmark import LatencyResult, add_ratios, results_table, time_interleaved
from fapn.models import realtime_fapn
from fapn.profiling import profile_model


@pytest.mark.parametrize(("neck", "gmacs"), [("fpn", 44.76), ("fpn+fam", 51.25), ("fapn", 52.00)])
def test_macs_follow_the_table1_convention(neck: str, gmacs: float) -> None:
    # fapn profile's paper convention at 768x1536 (Table 1: 44.5 / 51.0 / 51.8; conv-only 44.55 / 51.04 / 51.79,
    # fvcore also counts batch norm and the final resize of the logits).
    model = realtime_fapn(backbone="resnet18", num_classes=19, neck=neck)
    assert profile_model(model, (1, 3, 768, 1536)).gmacs_paper == pytest.approx(gmacs, abs=0.006)


def test_time_interleaved_takes_turns_and_reports_errors() -> None:
    calls: list[str] = []

    def runner(name: str):
        return lambda: calls.append(name)

    def broken() -> None:
        raise RuntimeError("no kernel for this dtype\nmore")

    times, errors = time_interleaved({"a": runner("a"), "b": runner("b"), "c": broken}, warmup=1, repeats=3)
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert len(times["a"]) == len(times["b"]) == 3 and times["c"] == []
    assert errors == {"c": "no kernel for this dtype"}


def test_ratios_are_per_setting() -> None:
    rows = [
        LatencyResult("fpn", 8, 8, 1, "torch", times_ms=[10, 10, 10], gmacs=2.0),
        LatencyResult("fapn", 8, 8, 1, "torch", deform_backend="cpu", times_ms=[12, 15, 30], gmacs=2.5),
        LatencyResult("fpn", 8, 8, 1, "onnxruntime", times_ms=[4.0], gmacs=2.0),
        LatencyResult("fapn", 8, 8, 1, "onnxruntime", times_ms=[6.0], gmacs=2.5),
        LatencyResult("fapn", 8, 8, 2, "torch", times_ms=[1.0], gmacs=5.0),  # no baseline at batch 2
        LatencyResult("fpn (resnet18) [a.pt]", 8, 8, 4, "torch", times_ms=[2.0]),  # a checkpoint's label
        LatencyResult("fapn (resnet18) [b.pt]", 8, 8, 4, "torch", times_ms=[3.0]),
    ]
    add_ratios(rows, "fpn")
    assert [r.latency_ratio for r in rows] == [1.0, 1.5, 1.0, 1.5, None, 1.0, 1.5]
    assert rows[1].macs_ratio == 1.25 and rows[1].iqr_ms == (13.5, 22.5)
    assert (
        "| fapn | cpu | 8x8 | 1 | torch | float32 | contiguous | 15.0 | 13.5-22.5 | 66.67 | 2.50 | 1.500 | 1.250 |"
        in results_table(rows)
    )


def test_cli_benchmark_runs_variants_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = [
        "benchmark",
        "--necks",
        "fpn",
        "fapn",
        "--sizes",
        "64x64",
        "--batch-sizes",
        "1",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--deform-backends",
        "auto",
        "torchvision",
        "--json",
        str(out),
    ]
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole process
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * 3  # batch 1 and 2 x (fpn, fapn/auto, fapn/torchvision)
    assert all(len(r["times_ms"]) == 2 and r["median_ms"] > 0 for r in rows)
    assert {r["deform_backend"] for r in rows if r["model"] == "fapn"} == {
        "torchvision",
        fapn.ops.default_backend("cpu"),
    }
    fpn = [r for r in rows if r["model"] == "fpn"]
    assert all(r["latency_ratio"] == 1.0 for r in fpn)
    fapn_row = next(r for r in rows if r["model"] == "fapn" and r["batch"] == 1)
    assert fapn_row["macs_ratio"] == pytest.approx(
        profile_model(realtime_fapn(neck="fapn"), (1, 3, 64, 64)).gmacs_paper
        / profile_model(realtime_fapn(neck="fpn"), (1, 3, 64, 64)).gmacs_paper
    )
    assert "latency x fpn" in table
    with pytest.raises(SystemExit) as usage:  # argparse: "argument --sizes: expected HEIGHTxWIDTH ..."
        main(["benchmark", "--sizes", "12xAB"])
    assert usage.value.code == 2 and "--sizes: expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["benchmark", "--deform-backends", "nope"]) == 2


def test_default_and_given_sizes_are_height_width_pairs() -> None:
    # argparse does not apply type=parse_size to a list default: without requested_sizes, a plain
    # `fapn benchmark` unpacked the string "768x1536" and failed with "too many values to unpack".
    from fapn.cli.benchmark import requested_sizes
    from fapn.cli.main import build_parser

    parser = build_parser()
    assert requested_sizes(parser.parse_args(["benchmark"])) == [(768, 1536)]
    given = parser.parse_args(["benchmark", "--sizes", "64x96", "32"])
    assert requested_sizes(given) == [(64, 96), (32, 32)]


def test_reliability_warnings_name_the_load_and_the_spread() -> None:
    from fapn.inference.benchmark import reliability_warnings

    steady = LatencyResult("fpn", 8, 8, 1, "torch", times_ms=[10.0, 10.1, 10.2, 9.9])
    noisy = LatencyResult("fapn", 8, 8, 1, "torch", times_ms=[10.0, 30.0, 10.0, 31.0])
    assert reliability_warnings([steady], [0.2, 0.3], threads=2, cores=2) == []
    # 2 cores, 1 thread: a load of 1.6 means another busy process beside the benchmark
    loaded = reliability_warnings([steady], [1.6], threads=1, cores=2)
    assert len(loaded) == 1 and "load average 1.6" in loaded[0]
    spread = reliability_warnings([steady, noisy], [None], threads=1, cores=2)
    assert len(spread) == 1 and spread[0].startswith("fapn torch float32 contiguous 8x8") and "unreliable" in spread[0]


def test_cli_benchmark_warns_on_a_busy_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fapn.inference.benchmark as bench

    monkeypatch.setattr(bench, "machine_load", lambda: 7.5)
    threads = torch.get_num_threads()
    try:
        assert main(["benchmark", "--necks", "fpn", "--sizes", "32x32", "--repeats", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "warning: load average 7.5" in capsys.readouterr().err


def test_cli_benchmark_onnxruntime_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        args = ["benchmark", "--necks", "fpn", "fapn", "--sizes", "64x64", "--runtimes", "onnxruntime-int8",
                "--repeats", "2", "--warmup", "0", "--threads", "1", "--json", str(out)]  # fmt: skip
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())
    assert [(r["model"], r["runtime"], r["dtype"]) for r in rows] == [
        ("fpn", "onnxruntime-int8", "int8"),
        ("fapn", "onnxruntime-int8", "int8"),
    ]
    assert all(r["median_ms"] > 0 for r in rows) and rows[0]["latency_ratio"] == 1.0
