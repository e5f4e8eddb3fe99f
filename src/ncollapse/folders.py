"""Output folders, refused before anything is computed.

A command that writes files (a run directory, plots, a features report, a phase diagram) checks
the folder they go to first: a file where the folder should be, a path through a file, a place
that cannot be written. Nothing is created by the check: the nearest folder that exists is
probed for writing, so a refused command leaves the disk as it was, and a long computation never
ends in a folder it cannot write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import UserError, write_error

__all__ = ["check_output_folder", "make_output_folder", "nearest_existing"]


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself when it exists, else its nearest ancestor that does (``/`` at worst)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_folder(folder: str | Path, option: str = "--out", elsewhere: str = "") -> Path:
    """Refuse, before anything is computed, a folder that cannot take output files: a file, a
    path through a file, a place that cannot be written (the nearest existing folder is probed;
    nothing is created). ``elsewhere``: how to send the files somewhere else (default: "give
    ``option`` another folder")."""
    base = Path(folder)
    if base.exists() and not base.is_dir():
        raise UserError(f"{option} {base} is a file, not a folder; give a folder")
    probe = nearest_existing(base)
    if not probe.is_dir():
        raise UserError(f"{option} {base} is not a folder: {probe} is a file; give a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise write_error(
            base, exc, elsewhere=elsewhere or f"give {option} another folder"
        ) from None
    return base


def make_output_folder(folder: Path) -> Path:
    """``folder`` (checked by :func:`check_output_folder`), created when missing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    return folder
