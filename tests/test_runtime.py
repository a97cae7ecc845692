"""fapn.runtime: one device choice, one autocast, one thread setting for the whole library."""

from __future__ import annotations

import pytest
import torch

from fapn.runtime import autocast, resolve_device, set_threads


def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_a_clear_error(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^--device {name}: no CUDA GPU is visible"):
        resolve_device(name)
    with pytest.raises(ValueError, match=rf"^train.device={name}: no CUDA GPU"):
        resolve_device(name, "train.device")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_unknown_device_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown device|cuda:N"):
        resolve_device(name)


def test_autocast_is_bfloat16_on_cpu_and_off_when_disabled() -> None:
    a = torch.randn(4, 4)
    with autocast("cpu", enabled=True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), enabled=False):
        assert (a @ a).dtype == torch.float32


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(None)
        assert torch.get_num_threads() == before
        set_threads(1)
        assert torch.get_num_threads() == 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(ValueError, match="positive integer"):
                set_threads(bad)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)


def test_loader_workers_never_exceed_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # a recipe written for a GPU server (num_workers: 8) on a 2-core machine: 2 workers (torch warns above the
    # cores this process may use, the count it compares with)
    import fapn.runtime
    from fapn.runtime import loader_workers

    monkeypatch.setattr(fapn.runtime, "_usable_cores", lambda: 2)
    assert [loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"data\.num_workers must be 0 or more, got -1"):
        loader_workers(-1)
