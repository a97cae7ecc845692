"""The run folder and its one resume rule, the same for every task [ours]:

* a folder that holds a run (``last.pt``, ``log.jsonl``, ...) is continued with ``--resume`` or replaced with
  ``--overwrite``; anything else is an error, so no run is overwritten by accident;
* ``--resume`` without ``last.pt`` is an error (never a silent fresh start);
* a resumed run keeps its recipe: the config saved in ``last.pt`` is used, and a value that differs from it is
  an error naming the key, except the keys of :data:`RUNTIME_KEYS` (where and how the run executes);
* resuming is exact: the weights after ``N/2 + resume + N/2`` iterations equal those of ``N`` straight ones
  (data order from :mod:`fapn.data.sampler`, RNG state in the checkpoint (:func:`fapn.engine.trainer.rng_state`),
  validation outside the RNG stream).

Example:
    >>> check_resume_config(
    ...     {"train": {"iterations": 10, "threads": 1}}, {"train": {"iterations": 10, "threads": 2}}, "last.pt"
    ... )  # threads may change
    >>> check_resume_config({"model": {"neck": "fapn"}}, {"model": {"neck": "fpn"}}, "runs/x/last.pt")
    Traceback (most recent call last):
    ...
    ValueError: cannot resume runs/x/last.pt with model.neck='fpn': the run was trained with model.neck='fapn' (a resumed run keeps its saved recipe; a different one is a new run, in another --output-dir)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from fapn.checkpoint import TRAINING_STATE_KEYS, load_checkpoint
from fapn.config import config_from_dict, config_to_dict, load_config, rename_old_keys

__all__ = [
    "flatten_record",
    "RUN_FILES",
    "RUNTIME_KEYS",
    "prepare_output_dir",
    "removed_if_start_fails",
    "check_resume_config",
    "load_resume_checkpoint",
    "resume_run_config",
    "saved_recipe",
]


_Config = TypeVar("_Config")


RUN_FILES = (
    "last.pt",
    "best.pt",
    "model_final.pt",
    "metrics.json",
    "log.jsonl",
    "skipped_files.txt",
    "tensorboard",
    "last_eval.json",  # what `fapn eval --weights RUN/NAME.pt` writes beside the checkpoints
    "best_eval.json",
    "model_final_eval.json",
)
"""What a training run writes into its folder (``--overwrite`` removes these and nothing else)."""


RUNTIME_KEYS = (
    "data.root",
    "data.num_workers",
    "data.skip_unreadable",
    "train.output_dir",
    "train.device",
    "train.threads",
    "train.log_period",
    "train.checkpoint_period",
    "train.eval_period",
    "train.time_budget_s",
)
"""Config keys that may differ on ``--resume``: where the data is and how the run executes, not what it computes.

``train.iterations`` is not among them: the learning-rate schedule is a function of it, so a longer run is a new
run. ``data.skip_unreadable`` is, so that a run stopped by a broken file can go on without it (the data order
after the resume then differs from an uninterrupted run's)."""


def prepare_output_dir(
    output_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool, is_main: bool = True
) -> Path:
    """Apply the run-folder rule (module docstring) and create the folder; returns it.

    Raises:
        ValueError: ``resume`` and ``overwrite`` together, or a folder holding a run without either.
        FileNotFoundError: ``resume`` without ``last.pt``.
    """
    out = Path(output_dir)
    if resume and overwrite:
        raise ValueError("--resume continues the run and --overwrite replaces it: give one of them")
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(
                f"--resume: no checkpoint to resume from at {out / 'last.pt'}; start a new run without --resume"
            )
        return out
    if not is_main:  # rank 0 decides (and may already be writing the new run's files)
        return out
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        if "last.pt" in found:
            what = "continue it with --resume, replace it with --overwrite"
        else:  # a run that stopped before its first checkpoint cannot be continued
            what = "it has no last.pt to --resume from: replace it with --overwrite"
        raise ValueError(f"{out} already holds a run ({', '.join(found)}): {what}, or choose another --output-dir")
    for name in found:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def removed_if_start_fails(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Around a run's start-up: when the block raises, remove the folders it created for ``output_dir`` (the
    run folder and the parents that did not exist before) that are still empty, so a failed start (offline
    weights, missing data, a bad recipe value) leaves nothing behind. A folder that existed, or holds anything,
    is kept.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "runs" / "new"
        >>> try:
        ...     with removed_if_start_fails(out):
        ...         out.mkdir(parents=True)
        ...         raise ValueError("no data")
        ... except ValueError:
        ...     pass
        >>> out.parent.exists()
        False
    """
    path = Path(output_dir).absolute()
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def check_resume_config(saved: Mapping[str, Any], current: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Raise a ``ValueError`` naming the first key where ``current`` differs from the ``saved`` config, keys of
    :data:`RUNTIME_KEYS` aside."""
    old, new = flatten_record(saved), flatten_record(current)
    for key in sorted(set(old) | set(new)):
        if key in RUNTIME_KEYS or any(key.startswith(f"{k}.") for k in RUNTIME_KEYS):
            continue
        if old.get(key) != new.get(key):
            raise ValueError(
                f"cannot resume {path} with {key}={new.get(key)!r}: the run was trained with {key}={old.get(key)!r} "
                "(a resumed run keeps its saved recipe; a different one is a new run, in another --output-dir)"
            )


def _with_defaults(saved: dict[str, Any], cls: type) -> dict[str, Any]:
    """A saved config with the keys renamed since it was written under their new names (``model.variant`` of
    earlier runs is ``model.neck``) and the keys added to ``cls`` at their defaults (as saved when it no longer
    reads as ``cls``: the comparison then names the key)."""
    try:
        saved = rename_old_keys(saved, cls)
        return config_to_dict(config_from_dict(saved, cls))
    except ValueError:
        return saved


def load_resume_checkpoint(output_dir: str | os.PathLike[str], cfg: Any, device: torch.device) -> dict[str, Any]:
    """``output_dir/last.pt`` for ``--resume``, once :func:`check_resume_config` has found ``cfg`` (a recipe
    dataclass) equal to the config saved in it; read before any data is.

    Raises:
        ValueError: an unreadable checkpoint, or a recipe that differs from the saved one (naming the key).
    """
    last = Path(output_dir) / "last.pt"
    checkpoint = load_checkpoint(last, map_location=device, require=TRAINING_STATE_KEYS)
    check_resume_config(_with_defaults(checkpoint["config"], type(cfg)), config_to_dict(cfg), last)
    return checkpoint


def resume_run_config(
    cls: type[_Config],
    config_path: str | os.PathLike[str],
    overrides: list[str],
    output_dir: str | os.PathLike[str] | None,
) -> _Config:
    """The ``cls`` config of the run to resume: the one saved in its ``last.pt``, with ``overrides`` applied (those
    that change the recipe then fail in :func:`check_resume_config`, naming the key). ``config_path`` (with
    ``overrides``) only says where the run is when ``output_dir`` is ``None``; every task's ``resume_config``.

    Raises:
        FileNotFoundError: no ``last.pt`` there.
        ValueError: an unreadable ``last.pt``.
    """
    recipe: Any = load_config(config_path, cls, overrides)
    last = Path(output_dir or recipe.train.output_dir) / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}; start a new run without --resume")
    saved = load_checkpoint(last, require=TRAINING_STATE_KEYS)["config"]
    try:
        return config_from_dict(saved, cls, overrides)
    except ValueError as err:
        raise ValueError(f"{last}: its saved config: {err}") from None


def saved_recipe(weights: str | os.PathLike[str]) -> dict[str, Any]:
    """The recipe a checkpoint was trained with (the ``config`` that ``fapn train`` stores in every checkpoint),
    for commands given a checkpoint and no recipe: its data is the data the model was trained and validated on.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or a checkpoint that stores no recipe (weights only).
    """
    config = load_checkpoint(weights).get("config")
    if not isinstance(config, Mapping):
        raise ValueError(
            f"{weights} stores no recipe (only weights): name the recipe it was trained with, "
            f"e.g. fapn eval RECIPE --weights {weights}"
        )
    return dict(config)


def flatten_record(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys.

    Example:
        >>> flatten_record({"model": {"backbone": "resnet18"}, "seed": 0})
        {'model.backbone': 'resnet18', 'seed': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(flatten_record(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
