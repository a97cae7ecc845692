"""The model registry, in the style of torchvision's ``get_model`` / ``list_models``.

Each public builder is decorated with :func:`register_model`; everything that turns a name into a model (the
training engine, checkpoints, the CLI) goes through :func:`get_model` or :func:`get_model_builder`, so there is
one table of names in the library.

Example:
    >>> from fapn.models import get_model, list_models
    >>> "realtime_fapn" in list_models()
    True
    >>> model = get_model("realtime_fapn", backbone="resnet18", num_classes=19)
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "get_model", "get_model_builder", "list_models"]

_BuilderT = TypeVar("_BuilderT", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}


def register_model(name: str | None = None, task: str = "semseg") -> Callable[[_BuilderT], _BuilderT]:
    """Decorator that registers a builder under ``name`` (default: the function's name).

    Args:
        name: the registry name.
        task: ``semseg`` (returns ``[N, C, H, W]`` logits in eval mode) or ``detection`` (torchvision's
            detector calling convention); :func:`list_models` filters on it.
    """

    def wrapper(builder: _BuilderT) -> _BuilderT:
        key = name or builder.__name__
        if key in _MODELS and _MODELS[key] is not builder:
            raise ValueError(f"a model named {key!r} is already registered")
        _MODELS[key] = builder
        _TASKS[key] = task
        return builder

    return wrapper


def _ensure_loaded() -> None:
    # Builders register themselves when their module is imported; importing the package imports them all.
    import fapn.models  # noqa: F401


def list_models(include: str | None = None, task: str | None = None) -> list[str]:
    """Sorted names of the registered builders, optionally filtered by a glob and by task."""
    _ensure_loaded()
    names = [n for n in _MODELS if task is None or _TASKS[n] == task]
    if include is not None:
        names = [n for n in names if fnmatch.fnmatch(n, include)]
    return sorted(names)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; a ``ValueError`` naming the known models otherwise."""
    _ensure_loaded()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {sorted(_MODELS)}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments."""
    return get_model_builder(name)(**kwargs)
