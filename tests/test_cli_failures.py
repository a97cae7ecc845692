"""Failures a new user meets on the command line are one line ``fapn: error: ...`` with exit code 2, and a run
that fails to start leaves no empty run folder behind."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torchvision

from fapn.cli.main import main


def _offline(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty cache
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)


def test_offline_pretrained_weights_are_one_line_and_leave_no_run_folder(
    no_internet: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "pretrained"
    args = ["train", "semseg/synthetic_r18_fapn", "--set", "model.weights_backbone=DEFAULT", "--output-dir", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fapn: error: could not download resnet18 weights"), err
    assert "copy it into torch's cache" in err[0]
    assert not out.exists() and not out.parent.exists()  # the folders this start created are gone again


def test_failed_start_keeps_a_folder_that_existed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["train", "semseg/camvid_r18_fapn", "--set", f"data.root={tmp_path / 'nowhere'}", "--output-dir", str(out)]
    assert main(args) == 2
    assert "fapn: error:" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:-1], str(empty)]) == 2
    assert empty.is_dir()  # not this start's folder: left as it was


def test_failed_detection_start_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "det"
    args = [
        "train",
        "detection/synthetic_mask_rcnn_R_18_FaPN",
        "--set",
        "data.format=coco",
        "--set",
        f"data.root={tmp_path / 'nowhere'}",
        "--output-dir",
        str(out),
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("fapn: error:")
    assert not out.exists()


def test_convert_refuses_code_and_garbage_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    for name in ("evil.pt", "evil.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps({"model": Evil()}))
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04 this is not a pickle")
    (tmp_path / "garbage.pth").write_bytes(b"PK\x03\x04 not a zip either")
    for name in ("evil.pt", "evil.pkl", "garbage.pkl", "garbage.pth"):
        assert main(["convert", str(tmp_path / name), "--out", str(tmp_path / "conv.pt")]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fapn: error: {tmp_path / name}"), err
        assert "weights_only=False" not in err[0]
    assert not (tmp_path / "conv.pt").exists()


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    # `fapn score --json | head -c 10`: the reader is gone before the writer is done; no BrokenPipeError traceback
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write from now on fails with EPIPE, deterministically
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    code = "import sys; from fapn.cli.main import main; sys.exit(main(['configs']))"
    try:
        writer = subprocess.run(
            [sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=120
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in writer.stderr and "BrokenPipeError" not in writer.stderr, writer.stderr[-2000:]
    assert writer.returncode == 1


def test_backbone_weights_of_another_network_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    out = tmp_path / "run"
    args = ["train", "semseg/synthetic_r18_fapn", "--set", f"model.weights_backbone={tmp_path / 'other.pth'}"]
    assert main([*args, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit resnet18" in err[0], err
    assert not out.exists()
