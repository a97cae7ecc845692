"""Deprecated location: checkpoints moved to :mod:`fapn.checkpoint` (one module for every task).

This re-export stays until no caller imports it; new code imports :mod:`fapn.checkpoint`. The builder table
``MODEL_BUILDERS`` is gone: builders are looked up in the registry (:func:`fapn.models.get_model_builder`).
"""

from __future__ import annotations

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint, model_state_from, save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "build_model_from_checkpoint", "model_state_from"]
