"""The ``ncollapse`` command line: argument parsing only; every command calls into the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers
the command and sets ``func``) so commands can be added without touching this file's logic.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import shlex
import signal
import sys
import threading
import unicodedata
import warnings

from ..errors import Preempted, UserError, write_error

#: the reasons a write fails that are the place's, not the program's (a full disk, a read-only
#: folder): one line even where the library did not name the file itself
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}

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


def _resume_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--resume" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--resume="):
            return a.split("=", 1)[1]
    return None


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
    if command == "train" and _resume_arg(argv) is not None:
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


def _job_stopped(argv: list[str], since: int, why: str) -> str:
    """The one line a torchrun rank prints when the job stops under it (another rank exited):
    what is kept and the command that goes on."""
    from ..engine.distributed import followed_runs, torchrun_env
    from ..rundir import Run, created_runs

    world = (torchrun_env() or (0, 2, 0))[1]
    launch = f"torchrun --nproc-per-node {world} -m ncollapse"
    command = argv[0] if argv else ""
    if command == "sweep":
        return f"{why}; finished cells are kept: rerun the same torchrun command to continue"
    path = _resume_arg(argv)
    if path is None:
        runs = [r.path for r in created_runs()[since:]] + [r.path for r in followed_runs()]
        path = str(runs[-1]) if runs else None
    if path is None or not Run(path).path.is_dir():
        return f"{why}; nothing was kept: run the same torchrun command again"
    if Run(path).checkpoint_path.is_file():
        kept = f"its last checkpoint is kept in {path}"
    else:
        kept = f"{path} has no checkpoint yet (a resume trains it from epoch 0)"
    return f"{why}; {kept}: resume with `{launch} train --resume {shlex.quote(path)}`"


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
    except RuntimeError as exc:
        from ..engine.distributed import peer_gone, stopping, torchrun_env

        gone = peer_gone(exc)
        if gone is None:
            raise
        stopping()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # torchrun's SIGTERM follows: one line
        rank, world, _ = torchrun_env() or (0, 2, 0)
        other = f"rank {1 - rank}" if world == 2 else "another rank"
        why = f"{other} of this torchrun job exited ({gone}), so rank {rank} stopped too"
        print(f"ncollapse: error: {_job_stopped(argv, since, why)}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"ncollapse: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write the library did not name itself (full disk, read-only)
        if exc.errno not in _WRITE_ERRNOS:
            raise
        message = write_error(exc.filename or "a file", exc)
        print(f"ncollapse: error: {one_line(str(message))}", file=sys.stderr)
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
