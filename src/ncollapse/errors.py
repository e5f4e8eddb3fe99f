"""Errors meant for people.

Every mistake a user can make (a bad config key, an impossible ETF, a missing dataset) raises
a subclass of :class:`UserError`. The CLI prints its message as one ``error: ...`` line and exits
with status 2, never a traceback. Library users catch them like any other exception.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config file or ``--set`` override is invalid."""


class DataError(UserError):
    """A dataset is missing, corrupt or cannot be subset as asked."""


class Preempted(BaseException):
    """Training stopped on a signal (SIGTERM, SIGUSR1: a scheduler about to preempt the job)
    after saving a checkpoint at a step boundary; ``--resume`` continues from that step.

    A ``BaseException``, like ``KeyboardInterrupt``: code that catches ``Exception`` lets it
    through. ``exit_status`` is 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1), what
    a shell reports for a process that the signal ended; the command line exits with it.
    """

    def __init__(self, signum: int, run_dir: str, where: str) -> None:
        import signal

        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        self.run_dir = run_dir
        self.where = where
        self.exit_status = 128 + self.signum
        super().__init__(f"stopped by {self.signal_name}: checkpoint saved {where} in {run_dir}")


#: what to do when a file cannot be written, by the reason the system gives
_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free some space there",
    errno.EDQUOT: "the disk quota is used up: free some space there",
    errno.EFBIG: "the file-size limit is reached (ulimit -f): raise it",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.EACCES: "the folder is not writable for you: make it writable (chmod u+w) or choose "
    "another place",
    errno.EPERM: "the folder is not writable for you: make it writable (chmod u+w) or choose "
    "another place",
}


def write_error(path: str | os.PathLike, exc: OSError, elsewhere: str = "") -> UserError:
    """The one-line error of a file that could not be written (a full disk, a file-size limit,
    a read-only place): the path, the reason, the fix, and what to do instead or then:
    ``elsewhere``, how to write somewhere else (``"give --out another folder"``: an
    alternative to the fix, or alone when there is none); else, for a file of a run directory
    with a checkpoint, the resume that goes on from it; else run the same command again.
    Callers write atomically, so nothing written before is lost."""
    why = exc.strerror or type(exc).__name__
    fix = _WRITE_FIXES.get(exc.errno or 0, "")
    folder = os.path.dirname(os.fspath(path)) or "."
    if elsewhere:
        then = f"or {elsewhere}" if fix else elsewhere
    elif all(os.path.isfile(os.path.join(folder, f)) for f in ("checkpoint.pt", "config.yaml")):
        # a run directory that can go on from its last checkpoint
        then = (
            f"then `ncollapse train --resume {folder}` goes on from its last checkpoint (in a "
            "sweep: rerun the sweep)"
        )
    else:
        then = "then run the same command again"
    return UserError(
        f"cannot write {path} ({why}){': ' + fix if fix else ''}; {then} (files written before "
        "are intact)"
    )


def _initials(name: str) -> str:
    parts = [p for p in name.replace("-", "_").split("_") if p]
    return "".join(p[0] for p in parts) if len(parts) > 1 else ""


def _score(typed: str, choice: str) -> float:
    """How close ``choice`` is to ``typed``: 2 for an abbreviation of one by the other
    (``learning_rate`` ~ ``lr``, ``wd`` ~ ``weight_decay``) or a match but for case; otherwise
    difflib's similarity ratio, plus 0.25 when one starts or ends the other (``epoch`` ~
    ``epochs``, ``decay`` ~ ``weight_decay``)."""
    a, b = typed.lower(), choice.lower()
    if a == b or (len(b) > 1 and _initials(a) == b) or (len(a) > 1 and _initials(b) == a):
        return 2.0
    score = difflib.SequenceMatcher(None, a, b).ratio()
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 2 and (long_.startswith(short) or long_.endswith(short)):
        score += 0.25
    return score


def _best(typed: str, choices: dict[str, str], cutoff: float = 0.5) -> str | None:
    """The value of ``choices`` (compared name -> choice) whose name scores highest, if any
    reaches ``cutoff``; ties go to the shorter name, then the first."""
    scored = [(_score(typed, k), -len(k), v) for k, v in choices.items()]
    scored = [s for s in scored if s[0] >= cutoff]
    return max(scored, key=lambda s: (s[0], s[1]))[2] if scored else None


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to ``name`` (for 'did you mean ...?' hints), or None.

    A dotted name (a config key) is first matched on its last part among the keys of its own
    section (``optim.learning_rate`` -> ``optim.lr``, ``optim.lrr`` -> ``optim.lr``), then by
    its exact last part in another section (``loss.lr`` -> ``optim.lr``), then (for a section
    that does not exist) as a whole (``optm.lr`` -> ``optim.lr``), then on its last part among
    every section (``lr`` -> ``optim.lr``)."""
    choices = list(choices)
    if not choices:
        return None
    section, _, tail = name.rpartition(".")
    if section:
        same = {c.rpartition(".")[2]: c for c in choices if c.rpartition(".")[0] == section}
        best = _best(tail, same)
        if best is not None:
            return best
    tails: dict[str, str] = {}
    for c in choices:
        tails.setdefault(c.rpartition(".")[2], c)
    if section:
        # the right key in the wrong section (``loss.lr`` -> ``optim.lr``)
        best = _best(tail, tails, cutoff=2.0)
        if best is not None:
            return best
    if not section or not any(c.startswith(section + ".") for c in choices):
        # a whole-name typo (``optm.lr`` -> ``optim.lr``); a key of a known section is judged
        # by its last part alone, or ``optim.zzz`` would be close to every ``optim.*``
        best = _best(name, {c: c for c in choices if not name.startswith(c + ".")})
        if best is not None:
            return best
    return _best(tail, tails)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A suffix ``"; did you mean 'x'?"`` (or a list of valid names when nothing is close)."""
    choices = sorted(choices)
    best = closest(name, choices)
    if best is not None:
        return f"; did you mean '{best}'?"
    return "; valid: " + ", ".join(choices)
