"""Models for the command line: from a checkpoint, or built untrained from a builder name."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
from fapn.models import get_model_builder

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
        builder_kwargs: e.g. ``backbone``, ``variant``, ``num_classes``; ``None`` values are dropped.

    Returns:
        ``(model, checkpoint)``; ``checkpoint`` is ``None`` for an untrained model.

    Example:
        >>> model, _ = load_model(name="realtime_fapn", variant="fpn", num_classes=19)
        >>> model.variant
        'fpn'
    """
    kwargs = {k: v for k, v in builder_kwargs.items() if v is not None}
    if deform_backend is not None:
        kwargs["deform_backend"] = deform_backend
    if weights is not None:
        checkpoint = load_checkpoint(weights)
        if kwargs:
            checkpoint = {**checkpoint, "model_config": {**(checkpoint.get("model_config") or {}), **kwargs}}
        return build_model_from_checkpoint(checkpoint).eval(), checkpoint
    if name is None:
        raise ValueError("give either a checkpoint (--weights) or a model name (--model)")
    return get_model_builder(name)(**kwargs).eval(), None


def model_label(model: nn.Module, checkpoint: dict[str, Any] | None = None, fallback: str = "model") -> str:
    """A short name for tables and figure titles: the variant and backbone when the model has them."""
    config = (checkpoint or {}).get("model_config") or {}
    variant = config.get("variant", getattr(model, "variant", None))
    backbone = config.get("backbone")
    if variant is None:
        return fallback
    return f"{variant} ({backbone})" if backbone else str(variant)
