"""The ``fapn`` command line: one subcommand per module of :mod:`fapn.cli`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# Subcommand modules. Each defines ``register(subparsers)`` (cheap: no torch import at module level) which
# adds its parser and sets ``func`` to a ``run(args) -> int``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "fapn.cli.demo",
    "fapn.cli.train",
    "fapn.cli.eval",
    "fapn.cli.score",
    "fapn.cli.configs",
    "fapn.cli.predict",
    "fapn.cli.compare",
    "fapn.cli.explain",
    "fapn.cli.benchmark",
    "fapn.cli.export",
    "fapn.cli.convert",
    "fapn.cli.profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fapn",
        description=(
            "Feature-aligned Pyramid Networks (FaPN, ICCV 2021): train, evaluate, profile and deploy FaPN "
            "models. Run 'fapn COMMAND --help' for the options of a command."
        ),
    )
    from fapn import __version__

    parser.add_argument("--version", action="version", version=f"fapn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # a subcommand not part of this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
