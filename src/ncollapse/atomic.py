"""Files written whole or not at all: through a temporary file in the same folder, then
``os.replace``, with the mode ``open()`` would give. Every file ncollapse writes for a user (run
directories, sweep tables, reports, plots) goes through :func:`atomic_write_bytes`, so an
interrupted or failed write never leaves a half-written file, nor loses the one it replaces."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import write_error

__all__ = ["atomic_write_bytes", "current_umask", "file_mode"]


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where Linux shows it
    (``/proc/self/status``), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the umask (``0o666 & ~umask``): what ``open()`` gives,
    which ``tempfile.mkstemp`` (always 0600) does not. Run files written through a temporary
    file get it too, so a group can read a shared run directory when the umask allows."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory; a file that
    cannot be written (a full disk, a read-only place) is a one-line :class:`UserError` and
    leaves the old ``path`` as it was."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode())  # as open() would: the umask decides, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
