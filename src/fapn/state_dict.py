"""Model weights in files: the one data-only reader of torch files, the state dict inside a checkpoint, what keeps
a state dict from fitting a model, and the one loader behind every builder's ``weights=`` argument.

Files are read with ``torch.load(weights_only=True)``: no code from the file runs, and anything that is not a
checkpoint is a one-line ``ValueError`` naming the file. :mod:`fapn.checkpoint` (whole checkpoints, rebuilt through
the registry) stands on this module; the models' builders use :func:`load_model_weights`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> state_dict_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}) is None
    True
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

__all__ = [
    "read_torch_file",
    "model_state_from",
    "load_state_dict_file",
    "state_dict_mismatch",
    "load_model_weights",
    "ModelWeights",
]

ModelWeights = str | os.PathLike[str] | None
"""A builder's ``weights=``: the path of a state dict, a fapn checkpoint or a hub folder, or ``None`` (random)."""


def _refused_global(message: str) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def read_torch_file(path: Path, map_location: str | torch.device | None) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a ``ValueError`` naming the file."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file (such as {path / 'last.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): a save that never finished? Use another checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes; the error below says what matters
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if path.suffix == ".pkl":
            raise ValueError(
                f"{path}: a Python pickle, not a torch checkpoint; it is not loaded because unpickling can run code "
                "from the file (the authors' detectron2 .pkl weights are converted with 'fapn convert')"
            ) from None
        refused = _refused_global(str(err))
        if refused is not None:
            raise ValueError(
                f"{path}: refused to load, the file would create the Python object {refused}; checkpoints are "
                "read as tensors and plain data only, so no code from a file runs (re-save the weights with "
                "torch.save(model.state_dict(), PATH))"
            ) from None
        raise ValueError(f"{path}: cannot read it as a checkpoint, the file is truncated or not a torch file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).split(". ")[0].strip() or type(err).__name__
        raise ValueError(
            f"{path}: cannot read it as a checkpoint, the file is truncated or corrupt ({first})"
        ) from None
    except OSError as err:  # permissions, a folder, an I/O error
        raise ValueError(f"{path}: cannot read the file ({err.strerror or type(err).__name__})") from None
    except Exception as err:  # torch's unpickler raises KeyError, ValueError, ... on garbage
        raise ValueError(f"{path}: not a torch checkpoint (unreadable as one: {type(err).__name__})") from None


def model_state_from(obj: Any, path: str | os.PathLike[str] | None = None) -> dict[str, Tensor]:
    """The model state dict inside ``obj``: a fapn checkpoint (``{"model": ...}``), a ``{"state_dict": ...}``
    wrapper, or a bare state dict. ``path`` only names the source in the error.

    Raises:
        ValueError: no state dict of tensors in ``obj``.

    Example:
        >>> model_state_from({"model": {"w": torch.zeros(1)}, "iteration": 3})
        {'w': tensor([0.])}
    """
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        source = f"{path}" if path is not None else "the checkpoint"
        raise ValueError(f"{source} holds no state dict (expected {{'model': {{name: tensor}}}} or {{name: tensor}})")
    return dict(obj)


def load_state_dict_file(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The model state dict of a file: a fapn checkpoint, a plain ``torch.save(model.state_dict())``, a hub folder
    or ``hf://owner/name``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, refused or without a state dict (see :func:`load_checkpoint`).
    """
    from fapn.hub_folder import is_hub_reference, load_hub_checkpoint

    if is_hub_reference(path):
        return dict(load_hub_checkpoint(path, map_location)["model"])
    path = Path(path)
    return model_state_from(read_torch_file(path, map_location), path)


def state_dict_mismatch(model: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """What keeps ``state`` from loading into ``model`` strictly, in one line; ``None`` when it fits.

    Example:
        >>> state_dict_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(3, 4)})
        '1 missing key(s) (bias); 1 shape mismatch(es) (weight is [3, 4] in the file, [3, 2] in the model)'
    """
    expected = model.state_dict()

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({some(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) ({shapes[0]})")
    return "; ".join(problems) or None


def load_model_weights(model: nn.Module, weights: ModelWeights) -> None:
    """Fill ``model`` in place from ``weights`` (see :data:`ModelWeights`); ``None`` leaves it as it is.

    Raises:
        TypeError: a torchvision weight enum (torchvision has no FaPN weights).
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or weights that do not fit ``model`` (the message names the keys or
            shapes).

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> path = tempfile.mkdtemp() + "/linear.pt"
        >>> torch.save(nn.Linear(2, 3).state_dict(), path)
        >>> load_model_weights(nn.Linear(2, 4), path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../linear.pt: its weights do not fit the model: 2 shape mismatch(es) (weight is [3, 2] ...)
    """
    if weights is None:
        return
    if isinstance(weights, WeightsEnum):
        raise TypeError(
            f"weights={weights}: torchvision has no FaPN weights; pass the path of a state dict or a fapn checkpoint "
            "(weights_backbone= takes torchvision's ImageNet weights)"
        )
    state = load_state_dict_file(weights)
    problem = state_dict_mismatch(model, state)
    if problem is not None:
        raise ValueError(f"{weights}: its weights do not fit the model: {problem}")
    model.load_state_dict(state)
