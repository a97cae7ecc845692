"""Small YAML configs loaded into dataclasses, with ``a.b=value`` overrides from the command line.

Generic: any (nested) dataclass works. A YAML file may start from another one with ``_base_: other.yaml``
(a path relative to the file, or a shipped config name); its keys are merged over the base's. A dataclass may
name keys of earlier releases in a class attribute ``renamed_keys = {"old": "new"}``: the loader reads them as
the new key, with a ``FutureWarning`` (:func:`rename_old_keys`).

Example:
    >>> from fapn.engine.semseg.config import SegmentationConfig
    >>> cfg = config_from_dict({"optim": {"lr": 0.02}}, SegmentationConfig, ["train.iterations=10"])
    >>> cfg.optim.lr, cfg.train.iterations
    (0.02, 10)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "load_config",
    "load_yaml",
    "config_from_dict",
    "apply_overrides",
    "config_to_dict",
    "rename_old_keys",
    "read_renamed_key",
    "resolve_config_path",
    "list_configs",
    "CONFIG_ROOT",
]

T = TypeVar("T")

CONFIG_ROOT = Path(str(resources.files("fapn") / "configs"))
"""Folder of the configs shipped with the package (``fapn configs`` lists them)."""


def list_configs(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names (paths relative to ``root`` without ``.yaml``) of all YAML configs under ``root``, recursively."""
    root = Path(root) if root is not None else CONFIG_ROOT
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config_path(path_or_name: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A config file path from a path, or from a shipped name such as ``semseg/camvid_r18_fapn``.

    A shipped name may leave out its folder (``camvid_r18_fapn``) when only one folder has it.

    Raises:
        FileNotFoundError: neither a file nor a shipped config; the closest shipped names are suggested.

    Example:
        >>> resolve_config_path("camvid_r18_fapn").relative_to(CONFIG_ROOT).as_posix()
        'semseg/camvid_r18_fapn.yaml'
    """
    candidates = [Path(path_or_name)]
    if relative_to is not None:
        candidates.insert(0, relative_to / str(path_or_name))
    name = str(path_or_name)
    candidates.append(CONFIG_ROOT / name)
    if not name.endswith((".yaml", ".yml")):
        candidates.append(CONFIG_ROOT / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = list_configs()
    stem = name[: -len(Path(name).suffix)] if name.endswith((".yaml", ".yml")) else name
    same_stem = [n for n in shipped if n.rsplit("/", 1)[-1] == stem]
    if len(same_stem) == 1:
        return CONFIG_ROOT / f"{same_stem[0]}.yaml"
    if len(same_stem) > 1:
        raise FileNotFoundError(f"config {name!r} is ambiguous: give one of {', '.join(same_stem)}")
    close = difflib.get_close_matches(stem, shipped, n=3, cutoff=0.6) or difflib.get_close_matches(
        stem, [n.rsplit("/", 1)[-1] for n in shipped], n=3, cutoff=0.6
    )
    close = [n if "/" in n else next(s for s in shipped if s.rsplit("/", 1)[-1] == n) for n in close]
    hint = f"did you mean {' or '.join(close)}?" if close else f"shipped configs: {', '.join(shipped)}"
    raise FileNotFoundError(f"config {name!r} is neither a YAML file nor a shipped config; {hint}")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_yaml(path_or_name: str | os.PathLike[str], cls: type | None = None) -> dict[str, Any]:
    """Read a YAML config as a dict, following ``_base_`` chains.

    With ``cls``, the keys of earlier releases in each file are renamed (:func:`rename_old_keys`) before the
    files are merged, so a file that says ``model.variant`` over a base that says ``model.neck`` overrides it.

    Raises:
        FileNotFoundError: no such config (see :func:`resolve_config_path`).
        ValueError: a file that is not valid YAML (file, line and column named) or not a mapping.
    """
    path = resolve_config_path(path_or_name)
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}{_yaml_position(err)}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base_name = data.pop("_base_", None)
    if cls is not None:
        try:
            data = rename_old_keys(data, cls)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if base_name is not None:
        base_path = resolve_config_path(base_name, relative_to=path.parent)
        data = _merge(load_yaml(base_path, cls), data)
    return data


def _yaml_position(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = ", ".join(str(p) for p in parts if p)
    return text or str(err).splitlines()[0]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting ints to floats, lists to tuples, dicts to
    dataclasses); raise ``ValueError`` naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        for arg in options:
            try:
                return _coerce(value, arg, where)
            except ValueError as err:
                errors.append(str(err))
        if len(options) == 1:  # X | None: X's own message, plus null
            raise ValueError(f"{errors[0]} (or null)")
        raise ValueError(f"{where}: {value!r} fits none of {[_type_name(a) for a in options]}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        # `in` would accept True for 1 and 1.0 for 1; a Literal field takes its exact values only
        if not any(type(value) is type(a) and value == a for a in allowed):
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}: {value!r} is not allowed; expected one of {', '.join(repr(a) for a in allowed)}{hint}"
            )
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(value, tp, prefix=f"{where}.")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {value!r}")
        return None
    return value


def _renamed_keys(cls: Any) -> Mapping[str, str]:
    renamed = getattr(cls, "renamed_keys", None)
    return renamed if isinstance(renamed, Mapping) else {}


def _dataclass_field(cls: Any, name: str) -> Any:
    """The dataclass type of ``cls``'s field ``name``, ``None`` when it is not a dataclass (or no field)."""
    hint = typing.get_type_hints(cls).get(name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


_UNSET: Any = object()


def _warn_renamed(old: str, new: str, stacklevel: int = 4) -> None:
    warnings.warn(
        f"{old} is now {new}; read as {new} ({old} will be removed in a future release)", FutureWarning, stacklevel
    )


def read_renamed_key(old: str, new: str, value: Any, current: Any = _UNSET, *, unset: Any = _UNSET) -> Any:
    """``value``, given under the key ``old`` of an earlier release, as the value of ``new``, with a
    ``FutureWarning``; ``current`` is what ``new`` holds (``unset``, or not given: nothing).

    Raises:
        ValueError: ``new`` holds another value than ``value``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", FutureWarning)
        ...     read_renamed_key("model.variant", "model.neck", "fpn", "fpn")
        'fpn'
    """
    if current is not _UNSET and current != unset and current != value:
        raise ValueError(f"{old}={value!r} and {new}={current!r} differ: {old} is now {new}, give {new} only")
    _warn_renamed(old, new, stacklevel=5)  # the frame that loaded the recipe, as for the override keys
    return value


def rename_old_keys(data: Mapping[str, Any], cls: type, prefix: str = "") -> dict[str, Any]:
    """``data`` with the keys of earlier releases under their new names (``cls.renamed_keys`` of every nested
    dataclass), a ``FutureWarning`` for each; :func:`config_from_dict` calls it, so every loader does.

    Raises:
        ValueError: an old key and its new name both given, with different values.

    Example:
        >>> import warnings
        >>> from fapn.engine.semseg.config import SegmentationConfig
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     rename_old_keys({"model": {"variant": "fpn"}}, SegmentationConfig)
        {'model': {'neck': 'fpn'}}
        >>> str(caught[0].message)
        'model.variant is now model.neck; read as model.neck (model.variant will be removed in a future release)'
    """
    data = dict(data)
    for old, new in _renamed_keys(cls).items():
        if old not in data:
            continue
        data[new] = read_renamed_key(prefix + old, prefix + new, data.pop(old), data.get(new, _UNSET))
    for name, value in data.items():
        nested = _dataclass_field(cls, name) if isinstance(value, Mapping) else None
        if nested is not None:
            data[name] = rename_old_keys(value, nested, f"{prefix}{name}.")
    return data


def _rename_overrides(overrides: Iterable[str], cls: type) -> list[str]:
    """``key.sub=value`` overrides with old keys (:func:`rename_old_keys`) under their new names.

    Raises:
        ValueError: an old key and its new name both set, to different values.
    """
    renamed: list[str] = []
    given: dict[str, tuple[str, str]] = {}  # new key -> (the key as written, its value)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep:  # apply_overrides names the problem
            renamed.append(override)
            continue
        key = key.strip()
        parts = key.split(".")
        node: Any = cls
        for i, part in enumerate(parts):
            if node is None:
                break
            parts[i] = _renamed_keys(node).get(part, part)
            node = _dataclass_field(node, parts[i])
        new_key = ".".join(parts)
        earlier = given.get(new_key)
        if earlier is not None and earlier[0] != key and earlier[1].strip() != raw.strip():
            old, old_value, value = (earlier[0], earlier[1], raw) if key == new_key else (key, raw, earlier[1])
            raise ValueError(
                f"{old}={old_value} and {new_key}={value} differ: {old} is now {new_key}, give {new_key} only"
            )
        given[new_key] = (key, raw)
        if new_key != key:
            _warn_renamed(key, new_key)
            override = f"{new_key}={raw}"
        renamed.append(override)
    return renamed


def config_from_dict(data: Mapping[str, Any], cls: type[T], overrides: Iterable[str] = (), prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a (nested) dict, after applying ``key.sub=value`` overrides; keys of
    earlier releases (in ``data`` and in ``overrides``) are read under their new names (:func:`rename_old_keys`).

    Raises:
        ValueError: an unknown key (the valid keys are listed), a value of the wrong type (a ``Literal`` field:
            a value not among its allowed ones, which are listed), or an old key and its new name with
            different values.
    """
    data = apply_overrides(rename_old_keys(data, cls, prefix), _rename_overrides(overrides, cls))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys here: "
            f"{', '.join(prefix + k for k in fields)}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML: ``0.005``, ``true``, ``[1, 2]``) to a nested dict."""
    data = dict(data)
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} is not of the form key.sub=value (e.g. optim.lr=0.005)")
        key, raw = override.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:  # not a ValueError: it would reach the user as a traceback
            raise ValueError(
                f"override {override!r}: the value is not valid YAML ({_yaml_problem(err)}); a value with spaces "
                "needs the whole argument quoted for the shell, e.g. --set 'data.options={size: [32, 40]}'"
            ) from None
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path_or_name: str | os.PathLike[str], cls: type[T], overrides: Iterable[str] = ()) -> T:
    """Load a YAML config file (or shipped config name) into the dataclass ``cls``.

    Every value is checked against its field's type here, before anything else runs: a ``Literal[...]`` field
    (e.g. ``model.neck``) takes only its listed values, so a typo fails at once, naming the key, the value and
    the allowed values, not after the datasets are read.

    Args:
        path_or_name: a YAML file, or a shipped config name such as ``"semseg/camvid_r18_fapn"``.
        cls: the dataclass to fill; missing keys keep their defaults.
        overrides: ``"key.sub=value"`` strings applied over the file (``--set`` on the command line).

    Example:
        >>> from fapn.engine.semseg.config import SegmentationConfig
        >>> cfg = load_config("semseg/camvid_r18_fapn", SegmentationConfig, ["optim.lr=0.005"])
        >>> cfg.optim.lr
        0.005
    """
    path = resolve_config_path(path_or_name)
    data = load_yaml(path, cls)
    try:
        return config_from_dict(data, cls, overrides)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain data (lists, dicts, numbers, strings) for JSON, YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(config)
