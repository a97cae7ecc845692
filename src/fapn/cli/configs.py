"""``fapn configs``: list the shipped recipes (YAML files under ``fapn/configs``), or print one resolved."""

from __future__ import annotations

import argparse
from typing import Any

from fapn.cli.common import add_overrides_argument

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "configs",
        help="list the shipped training recipes, or print one",
        description=(
            "List the YAML recipes shipped with fapn (semantic segmentation under semseg/, detection under "
            "detection/). Pass a name to print that recipe resolved -- its _base_ merged, every default filled "
            "in, --set overrides applied -- as the training run will see it (--raw: the file as written). The "
            "folder may be left out of a name when only one folder has it (camvid_r18_fapn). Copy a recipe to "
            "start your own, or override single values with 'fapn train NAME --set key=value'. Files named "
            "base_*.yaml hold settings the recipes take through _base_; they are listed apart, on the last line."
        ),
    )
    parser.add_argument("name", nargs="?", help="print this recipe, e.g. semseg/camvid_r18_fapn or a YAML file")
    parser.add_argument("--raw", action="store_true", help="print the file as written (with its _base_ line)")
    add_overrides_argument(parser, help="show the recipe with this override applied (repeatable)")
    parser.set_defaults(func=run)


def _print_resolved(name: str, overrides: list[str]) -> None:
    import yaml

    from fapn.cli.common import config_class, config_task
    from fapn.config import config_to_dict, load_config, resolve_config_path

    path = resolve_config_path(name)
    config: Any = load_config(path, config_class(config_task(str(path))), overrides)
    print(f"# {path.name} resolved: _base_ merged, defaults filled" + (", --set applied" if overrides else ""))

    class Dumper(yaml.SafeDumper):  # mappings as blocks, lists on one line, as the shipped recipes are written
        pass

    Dumper.add_representer(
        list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
    )
    print(
        yaml.dump(config_to_dict(config), Dumper=Dumper, sort_keys=False, default_flow_style=False, width=110), end=""
    )


def run(args: argparse.Namespace) -> int:
    from fapn.config import CONFIG_ROOT, list_configs, load_yaml, resolve_config_path

    if args.name:
        if args.raw:
            print(resolve_config_path(args.name).read_text(), end="")
        else:
            _print_resolved(args.name, list(args.overrides))
        return 0
    names = list_configs()
    bases = [name for name in names if name.rsplit("/", 1)[-1].startswith(BASE_PREFIX)]
    for name in names:
        if name in bases:
            continue
        try:
            data = load_yaml(CONFIG_ROOT / f"{name}.yaml")  # _base_ merged: what the recipe trains
            summary = f"task={data.get('task', 'semseg')}"
            model = data.get("model") or {}
            if isinstance(model, dict) and model:
                shown = [(SHOWN_KEYS[k], model[k]) for k in SHOWN_KEYS if k in model]
                summary += " " + " ".join(f"{label}={value}" for label, value in shown)
        except Exception as err:  # a broken file should not hide the others
            summary = f"(unreadable: {err})"
        print(f"{name:<44} {summary}")
    if bases:
        print(f"bases (shared settings merged into the recipes above through _base_): {', '.join(bases)}")
    return 0


BASE_PREFIX = "base_"
"""Shipped files named ``base_*.yaml`` hold settings that recipes take through ``_base_``; not recipes themselves."""

SHOWN_KEYS = {"name": "model", "detector": "detector", "backbone": "backbone", "neck": "neck"}
"""Recipe ``model`` keys listed by ``fapn configs`` (a registry name such as ``pointrend_semantic_resnet50_fapn``
names its backbone)."""
