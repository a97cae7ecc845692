"""Checkpoints: plain data (tensors, numbers, strings, lists, dicts), written atomically, read with
``torch.load(weights_only=True)``.

A checkpoint is a dict with these keys (all but ``model`` and ``model_config`` optional):

* ``model``: the model's state dict;
* ``model_config``: keyword arguments of the builder, with ``name`` the builder (``"realtime_fapn"``), so
  :func:`build_model_from_checkpoint` can rebuild the model without the training config;
* ``dataset``: ``{"name", "class_names", "palette" (list of [r, g, b]), "ignore_index", "mean", "std"}``,
  so a checkpoint is all a user needs for inference;
* ``optimizer``, ``scheduler``, ``iteration``, ``rng``, ``config``, ``metrics``: training state.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint", "build_model_from_checkpoint", "MODEL_BUILDERS"]


def _model_builders() -> dict[str, Any]:
    from fapn.models.detection.builders import build_detection_model
    from fapn.models.detection.semantic_fpn import semantic_fpn_resnet50_fapn, semantic_fpn_resnet101_fapn
    from fapn.models.realtime import realtime_fapn

    return {
        "realtime_fapn": realtime_fapn,
        "build_detection_model": build_detection_model,
        "semantic_fpn_resnet50_fapn": semantic_fpn_resnet50_fapn,
        "semantic_fpn_resnet101_fapn": semantic_fpn_resnet101_fapn,
    }


MODEL_BUILDERS = _model_builders


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file in the same folder, then rename).

    Args:
        checkpoint: plain data, see the module docstring.
        path: destination; parent folders are created.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint as data only (``weights_only=True``: no code from the file is run).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a fapn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a fapn checkpoint (expected a dict with a 'model' state dict)")
    return checkpoint


def build_model_from_checkpoint(checkpoint: dict[str, Any], strict: bool = True) -> nn.Module:
    """Rebuild the model a checkpoint describes (``model_config``) and load its weights.

    Example:
        >>> ckpt = load_checkpoint("runs/camvid/best.pt")  # doctest: +SKIP
        >>> model = build_model_from_checkpoint(ckpt).eval()  # doctest: +SKIP
    """
    config = dict(checkpoint.get("model_config") or {})
    if "name" not in config:
        raise ValueError("checkpoint has no model_config['name']: cannot tell which model to build")
    name = config.pop("name")
    builders = MODEL_BUILDERS()
    if name not in builders:
        raise ValueError(f"unknown model {name!r} in checkpoint; known models: {sorted(builders)}")
    config.pop("weights_backbone", None)
    model = builders[name](**config)
    model.load_state_dict(checkpoint["model"], strict=strict)
    return model
