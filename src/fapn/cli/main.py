"""The ``fapn`` command line: one subcommand per module of :mod:`fapn.cli`.

Building the parser imports no torch (each subcommand imports what it needs when it runs), so ``fapn --help``
answers at once. Errors of the library (``ValueError``, ``FileNotFoundError``: bad input, data or config) and a
missing optional extra become one line ``fapn: error: ...`` and exit code 2; ``FAPN_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "fapn.cli.hub",
    "fapn.cli.profile",
    "fapn.cli.app",
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


def _debug() -> bool:
    return os.environ.get("FAPN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fapn ARGV``; returns the exit code (2: bad input, with a one-line message on stderr)."""
    from fapn.cli.common import missing_extra_hint

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
    except BrokenPipeError:  # `fapn ... | head`: the reader left; Python's own convention, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit would raise again
        return 1
    except (ValueError, FileNotFoundError) as err:  # the library's bad-input errors name what and where
        if _debug():
            raise
        print(f"fapn: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        hint = missing_extra_hint(err)
        if hint is None or _debug():
            raise
        print(f"fapn: error: {err.msg if 'pip install' in str(err.msg) else hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
