"""The ``ncollapse`` command line: argument parsing only; every command calls into the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers
the command and sets ``func``) so commands can be added without touching this file's logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import UserError

# name of module in this package -> registered by its add_parser()
COMMAND_MODULES = ("train", "compare", "analyze", "ufm", "sweep")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ncollapse",
        description=(
            "Train long-tailed classifiers with a fixed simplex-ETF head and the dot-regression "
            "loss, measure neural collapse, and simulate the unconstrained feature model."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ncollapse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name and exc.name.endswith(f"cli.{name}"):
                continue
            raise
        module.add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"ncollapse: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncollapse`` console script."""
    warnings.formatwarning = _one_line_warning  # warnings are for people too: no source lines
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"ncollapse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncollapse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
