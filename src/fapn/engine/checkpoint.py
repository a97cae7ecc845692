"""Deprecated location: checkpoints moved to :mod:`fapn.checkpoint` (one module for every task).

This re-export stays until no caller imports it; new code imports :mod:`fapn.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fapn.checkpoint import (
    _LEGACY_BUILDERS,
    build_model_from_checkpoint,
    load_checkpoint,
    model_builder,
    model_state_from,
    save_checkpoint,
)

__all__ = ["save_checkpoint", "load_checkpoint", "build_model_from_checkpoint", "model_state_from", "MODEL_BUILDERS"]


def MODEL_BUILDERS() -> dict[str, Callable[..., Any]]:  # noqa: N802 - the old name, kept for old callers
    """Deprecated: name -> builder; use :func:`fapn.models.get_model_builder` (the registry)."""
    from fapn.models import list_models

    return {name: model_builder(name) for name in [*list_models(), *_LEGACY_BUILDERS]}
