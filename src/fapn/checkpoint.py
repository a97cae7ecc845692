"""Checkpoints of every task: plain data written atomically, read as data only, rebuilt through the registry.

A checkpoint is a dict with these keys (all but ``model`` optional; ``model_config`` is needed to rebuild):

* ``model``: the model's state dict;
* ``model_config``: the builder's keyword arguments with ``name`` its registry name (``"realtime_fapn"``), so
  :func:`build_model_from_checkpoint` rebuilds the model without the training recipe;
* ``dataset``: ``{"name", "class_names", "palette" (list of [r, g, b]), "ignore_index", "mean", "std"}``, so a
  checkpoint is all inference needs;
* training state, written by :mod:`fapn.engine` for ``--resume``: ``optimizer``, ``scheduler``, ``scaler``
  (CUDA mixed precision), ``iteration``, ``rng`` (see :func:`fapn.engine.trainer.rng_state`), ``config`` (the
  whole recipe), ``metrics``.

Files are written through a temporary file in the same folder (``.NAME.PID-XXXX.tmp``) renamed over the
destination, so a kill during a save leaves the previous checkpoint intact; the temporary files such a kill
leaves are removed by the next save into that folder. Files are read with ``torch.load(weights_only=True)``:
no code from the file runs, and anything that is not a checkpoint is a one-line ``ValueError`` naming the file.

Example:
    >>> import tempfile, torch
    >>> from fapn.models import realtime_fapn
    >>> model = realtime_fapn(num_classes=3)
    >>> path = save_checkpoint(
    ...     {"model": model.state_dict(), "model_config": {"name": "realtime_fapn", "num_classes": 3}},
    ...     tempfile.mkdtemp() + "/model.pt",
    ... )
    >>> rebuilt = build_model_from_checkpoint(load_checkpoint(path))
    >>> type(rebuilt).__name__
    'RealtimeFaPN'
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fapn.state_dict import (
    load_state_dict_file,
    model_state_from,
    read_torch_file,
    state_dict_mismatch,
)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_file",
    "model_state_from",
    "build_model_from_checkpoint",
    "model_builder",
    "state_dict_mismatch",
    "remove_stale_temporary_files",
    "TRAINING_STATE_KEYS",
]

TRAINING_STATE_KEYS = ("optimizer", "scheduler", "iteration", "rng", "config")
"""Keys a checkpoint needs to be resumed (``last.pt``; ``best.pt`` and ``model_final.pt`` may lack some)."""

_TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError as err:
        return err.errno != errno.ESRCH
    return True


def remove_stale_temporary_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of saves into ``folder`` that were killed before their rename.

    A file counts as stale when the process that wrote it (its pid is in the name) is gone; temporary files
    without a pid (written by older versions) are stale when no checkpoint save of any live process could own
    them, which we cannot tell, so they are removed only when the checkpoint they were for exists.

    Returns:
        the files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP_PATTERN.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = match.group("pid")
        stale = not _process_alive(int(pid)) if pid else (folder / match.group("name")).is_file()
        if stale:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it back at once
    os.umask(mask)
    return mask


def save_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file in the same folder, then rename).

    Temporary files left in that folder by earlier saves that were killed are removed first.

    Args:
        checkpoint: plain data, see the module docstring.
        path: destination; parent folders are created.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_files(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> the mode of any other file written here
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(checkpoint), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    remove_stale_temporary_files(path.parent)  # old-style names are recognised once their checkpoint exists
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    require: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read a fapn checkpoint as data only (``weights_only=True``: no code from the file runs).

    A hub folder (``config.json`` + ``model.safetensors``) or ``hf://owner/name[@revision]`` is read through
    :func:`fapn.hub.load_hub_checkpoint` into the same dict (weights, ``model_config``, ``dataset``; no training
    state), so everything that takes a checkpoint takes those too.

    Args:
        path: the file, a hub folder or ``hf://owner/name``.
        map_location: where tensors go.
        require: keys the caller needs besides ``model`` (``TRAINING_STATE_KEYS`` to resume).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty, truncated, garbage, holds Python objects other than data, is not a dict
            with a ``model`` state dict, or lacks a required key; the message names the file.
    """
    from fapn.hub_folder import is_hub_reference, load_hub_checkpoint

    if is_hub_reference(path):
        checkpoint = load_hub_checkpoint(path, map_location)
        missing = [key for key in require if key not in checkpoint]
        if missing:
            raise ValueError(f"{path} is a hub folder: it holds weights but no training state, so it cannot be resumed")
        return checkpoint
    path = Path(path)
    checkpoint = read_torch_file(path, map_location)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), Mapping):
        what = (
            f"a dict with keys {sorted(map(str, checkpoint))[:8]}"
            if isinstance(checkpoint, dict)
            else (f"a {type(checkpoint).__name__}")
        )
        raise ValueError(f"{path} is not a fapn checkpoint: expected a dict with a 'model' state dict, found {what}")
    missing = [key for key in require if key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: it holds weights but no training state, so it cannot be resumed"
        )
    return checkpoint


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder of registry name ``name`` (:func:`fapn.models.get_model_builder`); every name a checkpoint
    of this library records (``build_detection_model``, ``semantic_fpn_resnet50_fapn`` included) is registered."""
    from fapn.models import get_model_builder

    return get_model_builder(name)


def build_model_from_checkpoint(checkpoint: Mapping[str, Any], strict: bool = True) -> nn.Module:
    """Rebuild the model a checkpoint describes (``model_config``) and load its weights.

    Raises:
        ValueError: no ``model_config['name']``, an unknown model name, or weights that do not fit the model.

    Example:
        >>> ckpt = load_checkpoint("runs/camvid/best.pt")  # doctest: +SKIP
        >>> model = build_model_from_checkpoint(ckpt).eval()  # doctest: +SKIP
    """
    config = dict(checkpoint.get("model_config") or {})
    if "name" not in config:
        raise ValueError("checkpoint has no model_config['name']: cannot tell which model to build")
    name = config.pop("name")
    config.pop("weights_backbone", None)  # the weights come from the checkpoint
    model = model_builder(name)(**config)
    state = model_state_from(checkpoint)
    source = checkpoint.get("weights_file")  # a hub folder's safetensors file
    if strict and source is not None:
        problem = state_dict_mismatch(model, state)
        if problem is not None:
            raise ValueError(f"{source}: the weights do not fit model {name!r}: {problem}")
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"the checkpoint's weights do not fit model {name!r} {config}: {first}") from None
    return model
