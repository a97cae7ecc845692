"""Models for the command line: from a checkpoint, or built untrained from a builder name."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
from fapn.models import get_model_builder
from fapn.models.registry import rename_legacy_keywords

__all__ = ["load_model", "model_label"]


def load_model(
    weights: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    deform_backend: str | None = None,
    **builder_kwargs: Any,
) -> tuple[nn.Module, dict[str, Any] | None]:
    """An eval-mode model from a checkpoint (``weights``) or, untrained, from builder ``name`` and its kwargs.

    Args:
        weights: a ``fapn train`` checkpoint.
        name: a registry name (:func:`fapn.models.list_models`, e.g. ``"realtime_fapn"``), when no weights.
        deform_backend: deformable-conv backend (``None``: default).
        builder_kwargs: e.g. ``backbone``, ``neck``, ``num_classes``; ``None`` values are dropped.

    Returns:
        ``(model, checkpoint)``; ``checkpoint`` is ``None`` for an untrained model.

    Example:
        >>> model, _ = load_model(name="realtime_fapn", neck="fpn", num_classes=19)
        >>> model.neck_name
        'fpn'
    """
    kwargs = {k: v for k, v in builder_kwargs.items() if v is not None}
    if deform_backend is not None:
        kwargs["deform_backend"] = deform_backend
    if weights is not None:
        checkpoint = load_checkpoint(weights)
        if kwargs:
            stored = dict(checkpoint.get("model_config") or {})
            if isinstance(stored.get("name"), str):  # its keywords of earlier releases under their new names
                stored = rename_legacy_keywords(stored["name"], stored)
            checkpoint = {**checkpoint, "model_config": {**stored, **kwargs}}
        return build_model_from_checkpoint(checkpoint).eval(), checkpoint
    if name is None:
        raise ValueError("give either a checkpoint (--weights) or a model name (--model)")
    return get_model_builder(name)(**kwargs).eval(), None


def model_label(model: nn.Module, checkpoint: dict[str, Any] | None = None, fallback: str = "model") -> str:
    """A short name for tables and figure titles: a real-time model's neck (:attr:`RealtimeFaPN.neck_name`), with
    the backbone when the checkpoint names it; ``fallback`` for other models."""
    config = (checkpoint or {}).get("model_config") or {}
    neck = getattr(model, "neck_name", None)
    backbone = config.get("backbone")
    if neck is None:
        return fallback
    return f"{neck} ({backbone})" if backbone else str(neck)
