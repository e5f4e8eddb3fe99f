"""The machinery of the reliability catalogue (``tests/test_reliability.py``, issue 13).

Every case runs ``ncollapse.cli.main`` in this process, in a workspace of its own that holds two
earlier runs (``runs/done``, finished; ``runs/half``, resumable) and whatever the case's setup
adds, with ``HOME``, ``./data`` and the caches inside the workspace. :func:`run_case` runs one
case and :func:`judge` says what it got: ``good``, ``traceback``, ``hang``, ``surprise`` (exit 0
where a refusal belongs, a missing notice, files written by a refused command), ``late`` (refused
only after the data was loaded) or ``message`` (refused, but not as one clear line).

``python tests/test_reliability_harness.py`` prints the outcome of every case (the survey the
closing note of issue 13 counts); the tests assert that every case is ``good``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

QUIET = ["--set", "run.progress=none", "--set", "run.tensorboard=false"]


@dataclass
class Case:
    """One bad input: the command line (``{ws}`` is the workspace), what it must get, and how
    the workspace is prepared. ``data``: the case may load data (a data mistake, or a run that
    trains); otherwise loading data counts as a late check. ``writes``: the case may write into
    the workspace (a run that trains); otherwise a refused command must leave it byte-identical.
    ``trains``: the case trains (it may load data and write). ``log``: lines before the last one
    on stderr are progress (a sweep's), only the last is judged. ``check(ws, err)`` returns what
    went wrong, or None. ``stdout``: what the command must print (a listing). ``readonly``:
    paths (folders with everything in them) that cannot be written while the command runs, also
    by root (:func:`read_only`); ``fsize``: a file-size limit (``ulimit -f``) standing for a
    full disk: a write beyond it fails with EFBIG."""

    id: str
    argv: list[str]
    needle: str = ""
    rc: int = 2
    setup: Callable[[Path], None] | None = None
    data: bool = False
    writes: bool = False
    trains: bool = False
    log: bool = False
    absent: tuple[str, ...] = ()
    check: Callable[[Path, str], str | None] | None = None
    stdout: str = ""  # what stdout must hold (a command that answers there)
    readonly: tuple[str, ...] = ()  # workspace paths made read-only while the command runs
    fsize: int | None = None  # the file-size limit while it runs (bytes; a full disk)
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    timeout: int = 60
    marks: tuple = field(default_factory=tuple)


@dataclass
class Outcome:
    rc: int | None
    out: str
    err: str
    error: BaseException | None = None  # an exception that escaped main()
    hang: bool = False
    late: bool = False  # data loaded although the case is refused before that
    reached_training: bool = False  # an expected refusal let training start
    changed: list[str] = field(default_factory=list)  # workspace files added/changed/removed
    problem: str | None = None  # from the case's own check
    ws: str = ""


class _Hang(BaseException):
    pass


class _DataLoaded(BaseException):
    pass


class _TrainingStarted(BaseException):
    pass


# ------------------------------------------------------------------ the workspace

_TEMPLATE: Path | None = None


def template() -> Path:
    """Two real runs (trained once per process): ``done`` (1 epoch, finished) and ``half``
    (the same run without its summary: resumable from its epoch-1 checkpoint)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from ncollapse.cli import main

        root = Path(tempfile.mkdtemp(prefix="ncollapse-reliability-"))
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            rc = main(["train", "--epochs", "1", "--out", str(root), "--name", "done", *QUIET])
        assert rc == 0, sink.getvalue()
        shutil.copytree(root / "done", root / "half")
        for name in ("summary.json", "model.pt", "collapse_final.npz"):
            (root / "half" / name).unlink()
        _TEMPLATE = root
    return _TEMPLATE


def snapshot(ws: Path) -> dict[str, str]:
    """Every file under ``ws`` (but ``home/``) with a hash of its bytes; folders as ``dir``."""
    out = {}
    for p in sorted(ws.rglob("*")):
        rel = p.relative_to(ws).as_posix()
        if rel == "home" or rel.startswith("home/"):
            continue
        if p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _on_alarm(signum, frame):
    raise _Hang


# ------------------------------------------------------------------ read-only places, full disks

_CAP_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: root writes anywhere


def _capabilities(new_effective: int | None = None) -> int:
    """This thread's effective capability bits (the first 32), set to ``new_effective`` when
    given (capget/capset; the permitted set is kept, so they can be raised again)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    old = data[0].effective
    if new_effective is not None:
        data[0].effective = new_effective
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    return old


@contextlib.contextmanager
def read_only(paths: list[Path]):
    """``paths`` (and everything under them) read-only while the block runs: modes without
    write bits, and for root (who writes anyway) this thread's DAC-override capabilities
    dropped, as a read-only mount or another user's folder would refuse."""
    modes = {}
    for top in paths:
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            modes[p] = p.stat().st_mode
            p.chmod(modes[p] & ~0o222)
    caps = None
    try:
        if os.geteuid() == 0:
            caps = _capabilities()
            _capabilities(caps & ~_CAP_DAC)
        yield
    finally:
        if caps is not None:
            _capabilities(caps)
        for p, mode in modes.items():
            p.chmod(mode)


@contextlib.contextmanager
def file_size_limit(limit: int | None):
    """``ulimit -f``: a write past ``limit`` bytes fails with EFBIG (Python ignores SIGXFSZ)."""
    if limit is None:
        yield
        return
    import resource

    import ncollapse.report.plots  # noqa: F401  (matplotlib's caches before the limit)

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


def run_case(case: Case, ws: Path) -> Outcome:
    """Prepare ``ws``, run the case's command there and report what happened."""
    import ncollapse.data
    import ncollapse.runner
    from ncollapse.cli import main
    from ncollapse.engine.loop import Trainer

    shutil.copytree(template(), ws / "runs")
    (ws / "home").mkdir()
    if case.setup is not None:
        case.setup(ws)
    before = snapshot(ws)
    argv = [a.replace("{ws}", str(ws)) for a in case.argv]
    out, err = io.StringIO(), io.StringIO()
    result = Outcome(None, "", "", ws=str(ws))
    old_cwd = os.getcwd()
    old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # gc of an earlier case's objects
        warnings.showwarning = _show
        mp.setenv("HOME", str(ws / "home"))
        mp.setenv("NCOLLAPSE_CACHE", str(ws / "home" / "cache"))
        mp.delenv("NCOLLAPSE_DATA", raising=False)
        if not (case.data or case.trains):
            real = ncollapse.data.load_data

            def too_early(*a, **k):
                result.late = True
                return real(*a, **k)

            mp.setattr(ncollapse.data, "load_data", too_early)
            mp.setattr(ncollapse.runner, "load_data", too_early)
        if not case.trains:

            def started(*a, **k):
                raise _TrainingStarted

            mp.setattr(Trainer, "fit", started)
        if case.patch is not None:
            case.patch(mp)
        os.chdir(ws)
        signal.alarm(case.timeout)
        try:
            with (
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
                read_only([ws / p for p in case.readonly]),
                file_size_limit(case.fsize),
            ):
                result.rc = main(argv)
        except SystemExit as exc:  # argparse exits from parse_args
            result.rc = exc.code if isinstance(exc.code, int) else 1
        except _Hang:
            result.hang = True
        except _TrainingStarted:
            result.reached_training = True
        except Exception as exc:  # what the catalogue is looking for
            result.error = exc
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old_alarm)
            os.chdir(old_cwd)
    result.out, result.err = out.getvalue(), err.getvalue()
    result.changed = _diff(before, snapshot(ws))
    if case.check is not None and result.error is None and not result.hang:
        result.problem = case.check(ws, result.err)
    return result


def judge(case: Case, o: Outcome) -> tuple[str, str]:
    """``(verdict, why)`` of one outcome (see the module docstring)."""
    ws = o.ws
    if o.hang:
        return "hang", f"no answer within {case.timeout} s"
    if o.error is not None or "Traceback" in o.err:
        what = f"{type(o.error).__name__}: {o.error}" if o.error else o.err.strip()[-200:]
        return "traceback", " ".join(what.split())[:200]
    if o.reached_training:
        return "surprise", "accepted: training started" + (" late" if o.late else "")
    if case.rc != 0 and o.rc == 0:
        return "surprise", "accepted (exit 0)"
    if o.late and case.rc != 0:
        return "late", "refused only after the data was loaded"
    lines = [ln for ln in o.err.splitlines() if ln.strip()]
    if case.log:
        lines = lines[-1:]
    if case.rc != 0:
        if o.rc != case.rc:
            return "message", f"exit {o.rc}, expected {case.rc}: {o.err.strip()[:160]}"
        prefix = "ncollapse: error:" if case.rc == 2 else "ncollapse: "
        if len(lines) != 1 or not lines[0].startswith(prefix):
            return "message", f"{len(lines)} lines on stderr: {' | '.join(lines)[:200]}"
    elif o.rc != 0:
        return "message", f"exit {o.rc}: {o.err.strip()[:200]}"
    needle = case.needle.replace("{ws}", ws)
    if needle and needle not in o.err:
        return "message", f"{needle!r} not in: {o.err.strip()[:200]}"
    said = case.stdout.replace("{ws}", ws)
    if said and said not in o.out:
        return "message", f"{said!r} not on stdout: {o.out.strip()[:200]}"
    for bad in case.absent:
        if bad.replace("{ws}", ws) in o.err:
            return "surprise", f"says {bad!r}: {o.err.strip()[:200]}"
    if o.problem:
        return "surprise", o.problem
    kept = [c for c in o.changed if c.startswith(("runs/done", "runs/half"))]
    if kept and not case.writes:
        return "surprise", f"an earlier run changed: {', '.join(kept[:4])}"
    if o.changed and not (case.writes or case.trains):
        return "surprise", f"wrote {', '.join(o.changed[:4])}"
    return "good", ""


if __name__ == "__main__":  # the survey: every case with its verdict, and the counts
    import collections

    sys.path.insert(0, str(Path(__file__).parent))
    from test_reliability import CASES

    counts: collections.Counter[str] = collections.Counter()
    only = sys.argv[1:]
    for case in CASES:
        if only and not any(o in case.id for o in only):
            continue
        with tempfile.TemporaryDirectory() as d:
            verdict, why = judge(case, run_case(case, Path(d)))
        counts[verdict] += 1
        print(f"{verdict:<10} {case.id:<44} {why}", flush=True)
    print(f"\n{len(CASES) if not only else sum(counts.values())} cases: {dict(counts)}")
