"""``fapn configs``: list the shipped recipes (YAML files under ``fapn/configs``), or print one."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "configs",
        help="list the shipped training recipes",
        description=(
            "List the YAML recipes shipped with fapn (semantic segmentation under semseg/, detection under "
            "detection/). Pass a name to print it; copy it to start your own, or override single values with "
            "'fapn train NAME --set key=value'."
        ),
    )
    parser.add_argument("name", nargs="?", help="print this config (e.g. semseg/camvid_r18_fapn)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapn.config import CONFIG_ROOT, list_configs, load_yaml, resolve_config_path

    if args.name:
        print(resolve_config_path(args.name).read_text(), end="")
        return 0
    for name in list_configs():
        try:
            data = load_yaml(CONFIG_ROOT / f"{name}.yaml")
            summary = f"task={data.get('task', 'semseg')}"
            model = data.get("model") or {}
            if isinstance(model, dict) and model:
                summary += " " + " ".join(f"{k}={model[k]}" for k in ("backbone", "variant") if k in model)
        except Exception as err:  # a broken file should not hide the others
            summary = f"(unreadable: {err})"
        print(f"{name:<44} {summary}")
    return 0
