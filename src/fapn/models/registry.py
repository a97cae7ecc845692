"""The model registry, in the style of torchvision's ``get_model`` / ``list_models``.

Each public builder is decorated with :func:`register_model`; everything that turns a name into a model (the
training engine, checkpoints, the CLI) goes through :func:`get_model` or :func:`get_model_builder`, so there is
one table of names in the library. A registered builder records on the model it returns its registry name and the
keyword arguments it was called with (``model.fapn_config``), so a model can be saved as a hub folder and built
again (:func:`fapn.save_pretrained`).

Example:
    >>> from fapn.models import get_model, list_models
    >>> "realtime_fapn" in list_models()
    True
    >>> model = get_model("realtime_fapn", backbone="resnet18", num_classes=19)
    >>> model.fapn_config
    {'name': 'realtime_fapn', 'backbone': 'resnet18', 'num_classes': 19}
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from torch import nn

__all__ = ["register_model", "get_model", "get_model_builder", "list_models", "rename_legacy_keywords", "KINDS"]

_BuilderT = TypeVar("_BuilderT", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}
_KINDS: dict[str, str] = {}
_RENAMED: dict[str, dict[str, str]] = {}

KINDS = ("factory", "architecture")
"""A *factory* takes the neck as its ``neck`` argument (``"fapn"`` or ``"fpn"``; ``realtime_fapn`` also takes
Table 1's necks between the two); an *architecture* is one network whose neck is fixed by its name
(``semantic_fpn_resnet50_fapn``, ``maskformer_fpn``, ``detectron2_fapn_rcnn``)."""


def register_model(
    name: str | None = None, task: str = "semseg", renamed_keywords: Mapping[str, str] | None = None
) -> Callable[[_BuilderT], _BuilderT]:
    """Decorator that registers a builder under ``name`` (default: the function's name).

    The decorated builder sets ``fapn_config`` on the model it returns: ``{"name": name, **arguments}`` with the
    arguments of the call (positional ones by their names; defaults are not recorded). When a registered builder
    calls another, the outer call's record wins.

    Args:
        name: the registry name.
        task: ``semseg`` (returns ``[N, C, H, W]`` logits in eval mode) or ``detection`` (torchvision's
            detector calling convention); :func:`list_models` filters on it.
        renamed_keywords: ``{old: new}`` keywords of earlier releases that the builder still takes, as
            torchvision takes ``pretrained=``: the value goes to ``new`` with a ``FutureWarning`` (so checkpoints
            and hub folders that recorded the old keyword still build), and the model records ``new``.

    The entry's kind (:data:`KINDS`) follows from the builder's signature: a ``neck`` argument makes it a
    factory, else it is a fixed architecture.
    """

    def wrapper(builder: _BuilderT) -> _BuilderT:
        key = name or builder.__name__
        if key in _MODELS and getattr(_MODELS[key], "__wrapped__", None) is not builder:
            raise ValueError(f"a model named {key!r} is already registered")
        signature = inspect.signature(builder)

        @functools.wraps(builder)
        def build(*args: Any, **kwargs: Any) -> nn.Module:
            kwargs = rename_legacy_keywords(key, kwargs)
            model = builder(*args, **kwargs)
            arguments: dict[str, Any] = {}
            for parameter, value in signature.bind(*args, **kwargs).arguments.items():
                if signature.parameters[parameter].kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                else:
                    arguments[parameter] = value
            object.__setattr__(model, "fapn_config", {"name": key, **arguments})  # plain data, not a submodule
            return model

        _MODELS[key] = build
        _TASKS[key] = task
        _KINDS[key] = "factory" if "neck" in signature.parameters else "architecture"
        _RENAMED[key] = dict(renamed_keywords or {})
        return cast(_BuilderT, build)

    return wrapper


def rename_legacy_keywords(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the builder registered as ``name`` with the keywords of earlier releases (its
    ``renamed_keywords``) under their new names, a ``FutureWarning`` each; every registered builder does this
    on its own, so call it only to compare a stored ``model_config`` (``name`` and all) with a new one or to merge
    new arguments into it.

    Raises:
        TypeError: an old keyword and its new name with different values, as a keyword given twice is.

    Example:
        >>> import warnings
        >>> import fapn.models  # registers realtime_fapn
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", FutureWarning)
        ...     rename_legacy_keywords("realtime_fapn", {"name": "realtime_fapn", "variant": "fpn", "num_classes": 3})
        {'name': 'realtime_fapn', 'num_classes': 3, 'neck': 'fpn'}
    """
    kwargs = dict(kwargs)
    for old, new in _RENAMED.get(name, {}).items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if new in kwargs and kwargs[new] != value:
            raise TypeError(
                f"{name}() got {old}={value!r} and {new}={kwargs[new]!r}: {old} is now {new}, give {new} only"
            )
        kwargs[new] = value
        warnings.warn(
            f"{name}(): the keyword {old}= is now {new}= ({old}= will be removed in a future release)",
            FutureWarning,
            stacklevel=3,
        )
    return kwargs


def list_models(include: str | None = None, task: str | None = None, kind: str | None = None) -> list[str]:
    """Sorted names of the registered builders, optionally filtered by a glob, by task and by kind
    (``factory`` or ``architecture``, see :data:`KINDS`).

    Example:
        >>> from fapn.models import list_models
        >>> list_models("maskformer*", kind="factory"), list_models("maskformer*", kind="architecture")
        (['maskformer'], ['maskformer_fapn', 'maskformer_fpn'])
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {list(KINDS)}")
    names = [n for n in _MODELS if (task is None or _TASKS[n] == task) and (kind is None or _KINDS[n] == kind)]
    if include is not None:
        names = [n for n in names if fnmatch.fnmatch(n, include)]
    return sorted(names)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; a ``ValueError`` naming the known models otherwise."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {sorted(_MODELS)}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments."""
    return get_model_builder(name)(**kwargs)
