"""Errors meant for people.

Every mistake a user can make (a bad config key, an impossible ETF, a missing dataset) raises
a subclass of :class:`UserError`. The CLI prints its message as one ``error: ...`` line and exits
with status 2, never a traceback. Library users catch them like any other exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config file or ``--set`` override is invalid."""


class DataError(UserError):
    """A dataset is missing, corrupt or cannot be subset as asked."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to ``name`` (for 'did you mean ...?' hints), or None."""
    choices = list(choices)
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if match:
        return match[0]
    # fall back on the last path component (``optim.lrr`` -> ``optim.lr``)
    tail = name.rsplit(".", 1)[-1]
    tails = {c.rsplit(".", 1)[-1]: c for c in choices}
    match = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.5)
    return tails[match[0]] if match else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A suffix ``"; did you mean 'x'?"`` (or a list of valid names when nothing is close)."""
    choices = sorted(choices)
    best = closest(name, choices)
    if best is not None:
        return f"; did you mean '{best}'?"
    return "; valid: " + ", ".join(choices)
