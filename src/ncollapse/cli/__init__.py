"""The ``ncollapse`` command line: argument parsing only; every command calls into the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers
the command and sets ``func``) so commands can be added without touching this file's logic.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import unicodedata
import warnings

from ..errors import Preempted, UserError

# name of module in this package -> registered by its add_parser()
COMMAND_MODULES = ("train", "compare", "evaluate", "predict", "export", "analyze", "ufm", "sweep")


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
    for p in _parsers(parser):
        p.error = _one_line_error(p)  # type: ignore[method-assign]
    return parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in dict.fromkeys(action.choices.values()):
                out.extend(_parsers(p))
    return out


def _one_line_error(parser: argparse.ArgumentParser):
    """argparse's own errors as one line naming the command (no usage block), exit status 2."""

    def error(message: str):
        text = one_line(f"{parser.prog}: {message} (see {parser.prog} --help)")
        parser.exit(2, f"ncollapse: error: {text}\n")

    return error


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; arguments no command knows are reported by the command they follow."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        p = parser
        for name in (getattr(args, "command", None), getattr(args, "ufm_command", None)):
            sub = _subcommands(p).get(name) if name else None
            if sub is None:
                break
            p = sub
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def one_line(message: str) -> str:
    """A message as one line: an indented list under ``...:`` joined with ``; ``, and control
    characters (a user's ``\\r`` or ``\\x85`` echoed back) written as escapes."""
    lines = [ln.strip() for ln in str(message).split("\n") if ln.strip()]
    out = lines[0] if lines else ""
    for ln in lines[1:]:
        out += (" " if out.endswith(":") or ln.startswith("(") else "; ") + ln
    return "".join(
        repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in out
    )


def _interrupted(argv: list[str], since: int) -> str:
    """What an interrupt left behind and the command that goes on from there."""
    from ..rundir import created_runs

    command = argv[0] if argv else ""
    again = shlex.join(["ncollapse", *argv])
    if command == "sweep":
        return (
            f"interrupted; finished cells are kept and the cell in progress resumes from its last "
            f"checkpoint: rerun `{again}` to continue"
        )
    if command == "train" and any(a == "--resume" or a.startswith("--resume=") for a in argv):
        return f"interrupted; to continue from the last checkpoint, rerun `{again}`"
    notes = []
    for run in created_runs()[since:]:
        if run.status() == "resumable":
            notes.append(f"continue with `ncollapse train --resume {shlex.quote(str(run.path))}`")
        elif not run.path.exists():
            notes.append(
                f"{run.path} stopped before its first checkpoint and nothing was kept: rerun "
                f"`{again}` to start it again"
            )
    if not notes:
        return "interrupted before any run was created; nothing was kept"
    return "interrupted; " + "; ".join(notes)


def _preempted(stop: Preempted, argv: list[str]) -> str:
    """What a stop on a signal saved, and the command that goes on from there."""
    again = shlex.join(["ncollapse", *argv])
    if argv and argv[0] == "sweep":
        go_on = f"rerun `{again}` to continue the sweep from there"
    else:
        go_on = f"continue with `ncollapse train --resume {shlex.quote(stop.run_dir)}`"
    return f"{stop}; {go_on} (exit status {stop.exit_status} = 128 + {stop.signal_name})"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"ncollapse: warning: {one_line(str(message))}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncollapse`` console script."""
    from ..threads import quiet_openmp

    quiet_openmp()  # before torch loads its OpenMP runtime (docs/threads.md)
    warnings.formatwarning = _one_line_warning  # warnings are for people too: no source lines
    from ..rundir import created_runs

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    since = len(created_runs())
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"ncollapse: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ncollapse: {_interrupted(argv, since)}", file=sys.stderr)
        return 130
    except Preempted as stop:
        print(f"ncollapse: {_preempted(stop, argv)}", file=sys.stderr)
        return stop.exit_status


def run() -> None:
    """The ``ncollapse`` process: :func:`main`, then exit with its status. A torchrun worker
    exits through :func:`ncollapse.engine.distributed.exit_process`, which skips the
    interpreter's teardown (PyTorch's gloo threads can abort it)."""
    code = main()
    from ..engine.distributed import exit_process

    exit_process(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
