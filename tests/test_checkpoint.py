"""fapn.checkpoint: every unreadable file is a one-line ValueError naming it; killed saves leave no litter."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fapn.checkpoint import (
    build_model_from_checkpoint,
    load_checkpoint,
    load_state_dict_file,
    model_state_from,
    save_checkpoint,
)


class _RunsCode:
    def __reduce__(self):  # what a malicious pickle does
        return (os.system, ("echo pwned",))


def _good(tmp_path: Path) -> Path:
    return save_checkpoint({"model": {"w": torch.arange(4.0)}, "iteration": 3}, tmp_path / "good.pt")


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = _good(tmp_path).read_bytes()
    files = {
        "truncated": (tmp_path / "truncated.pt", data[: len(data) // 2], "truncated or corrupt"),
        "garbage": (tmp_path / "garbage.pt", bytes(range(256)) * 8, "truncated or not a torch file"),
        "empty": (tmp_path / "empty.pt", b"", "empty"),
        "text": (tmp_path / "notes.pt", b"hello world\n", "not a torch checkpoint|truncated"),
        "pkl": (tmp_path / "model.pkl", pickle.dumps({"model": _RunsCode()}), "a Python pickle.*fapn convert"),
    }
    out = {}
    for key, (path, content, message) in files.items():
        path.write_bytes(content)
        out[key] = (path, message)
    refused = tmp_path / "numpy.pt"
    torch.save({"model": {"w": np.ones(2)}}, refused)
    out["refused global"] = (refused, r"refused to load.*numpy")
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=2))
    out["code"] = (code, r"refused to load.*system")
    return out


@pytest.mark.parametrize("case", ["truncated", "garbage", "empty", "text", "pkl", "refused global", "code"])
def test_unreadable_checkpoints_are_one_line_errors_naming_the_file(tmp_path: Path, case: str) -> None:
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text
    assert "weights_only=False" not in text and "weights_only` set to `False" not in text
    with pytest.raises(ValueError, match=str(path).replace(".", r"\.")):
        load_state_dict_file(path)


def test_not_a_checkpoint_and_missing_training_state(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt is not a fapn checkpoint.*found a list"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"good\.pt lacks optimizer, scheduler, rng, config"):
        load_checkpoint(_good(tmp_path), require=("optimizer", "scheduler", "iteration", "rng", "config"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_state_dict_unwrapping(tmp_path: Path) -> None:
    state = {"w": torch.ones(2)}
    for wrapped in (state, {"model": state, "iteration": 1}, {"state_dict": state}):
        assert model_state_from(wrapped).keys() == {"w"}
    torch.save(state, tmp_path / "plain.pth")
    assert torch.equal(load_state_dict_file(tmp_path / "plain.pth")["w"], state["w"])
    with pytest.raises(ValueError, match="holds no state dict"):
        model_state_from({"model": {"w": "not a tensor"}})


def test_temporary_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path: Path) -> None:
    # a save killed before its rename: the new-style name carries the writer's pid, which is gone
    dead_pid = 2**22 + 12345
    while True:
        try:
            os.kill(dead_pid, 0)
            dead_pid += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead_pid += 1
    killed = tmp_path / f".best.pt.{dead_pid}-k1ll3d_x.tmp"
    killed.write_bytes(b"x" * 1000)
    old_style = tmp_path / ".last.pt.abc_1234.tmp"  # written by an earlier version (no pid)
    old_style.write_bytes(b"x" * 1000)
    live = tmp_path / f".last.pt.{os.getpid()}-inflight.tmp"  # a save of a live process: kept
    live.write_bytes(b"x")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_text("mine")
    save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert not killed.exists() and not old_style.exists()
    assert live.exists() and unrelated.exists() and (tmp_path / "last.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".notes.tmp", live.name, "last.pt"])


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint({"model": {"w": torch.zeros(1)}}, tmp_path / "last.pt")
    # pickle refuses a local lambda: PicklingError or AttributeError, depending on how torch.save reaches it
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_checkpoint({"model": {"w": lambda: None}}, path)  # torch.save cannot pickle a lambda
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(1))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_build_through_the_registry_and_weights_that_do_not_fit(tmp_path: Path) -> None:
    from fapn.models import realtime_fapn

    torch.manual_seed(0)
    model = realtime_fapn(num_classes=3, neck="fpn")
    checkpoint = {
        "model": model.state_dict(),
        "model_config": {"name": "realtime_fapn", "num_classes": 3, "neck": "fpn"},
    }
    rebuilt = build_model_from_checkpoint(checkpoint)
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="do not fit model 'realtime_fapn'"):
        build_model_from_checkpoint(
            {**checkpoint, "model_config": {"name": "realtime_fapn", "num_classes": 5, "neck": "fpn"}}
        )
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model_from_checkpoint({**checkpoint, "model_config": {"name": "nope"}})


def test_checkpoints_get_the_permissions_of_every_other_file(tmp_path: Path) -> None:
    # mkstemp creates 0600 files; a checkpoint is readable like the logs beside it (0644 under umask 022)
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    path = save_checkpoint({"model": {}}, tmp_path / "last.pt")
    (tmp_path / "log.jsonl").write_text("{}")
    assert path.stat().st_mode & 0o777 == (tmp_path / "log.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask
