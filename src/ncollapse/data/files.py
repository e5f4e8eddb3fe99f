"""File plumbing for the readers: search paths, safe archive extraction, downloads, caches."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DataError
from ..folders import nearest_existing

__all__ = [
    "cache_key",
    "default_cache_dir",
    "download_file",
    "download_place",
    "file_digest",
    "given_cache_dir",
    "is_writable_dir",
    "load_cached_arrays",
    "safe_extract",
    "save_cached_arrays",
    "search_dirs",
]

CACHE_VERSION = 1


def repo_root() -> Path | None:
    """The source checkout this package runs from (``<repo>/src/ncollapse/data``), if any."""
    p = Path(__file__).resolve().parents[3]
    return p if (p / "pyproject.toml").is_file() else None


def default_cache_dir() -> Path:
    """``$NCOLLAPSE_CACHE``, else the user cache directory: ``$XDG_CACHE_HOME/ncollapse``,
    else ``~/.cache/ncollapse``."""
    env = os.environ.get("NCOLLAPSE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "ncollapse"


def search_dirs(root: str | os.PathLike | None) -> list[Path]:
    """Where datasets are looked for, in order: ``root``, ``$NCOLLAPSE_DATA``, ``./data``,
    ``~/.cache/ncollapse`` (duplicates removed). A ``root`` that does not exist is the only
    place: a mistyped ``data.root`` must not quietly pick up a copy from somewhere else (and a
    download goes there)."""
    dirs: list[Path] = []
    if root:
        dirs.append(Path(root).expanduser())
        if not dirs[0].exists():
            return dirs
    env = os.environ.get("NCOLLAPSE_DATA")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.cwd() / "data")
    dirs.append(Path.home() / ".cache" / "ncollapse")
    out: list[Path] = []
    seen: set[str] = set()
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d.absolute())
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _missing(d: Path) -> list[Path]:
    """``d`` and its parents that do not exist yet, deepest first."""
    out = []
    while not d.exists() and d != d.parent:
        out.append(d)
        d = d.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    for f in folders:  # deepest first; a folder something landed in stays
        try:
            f.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def download_place(root: str | os.PathLike | None):
    """The first search directory (:func:`search_dirs`) that can be written, made when missing,
    for a download (None when there is none); the folders made for it are removed again when
    the block fails, so a failed ``--download`` leaves no empty folder behind."""
    for d in search_dirs(root):
        made = _missing(d)
        if is_writable_dir(d):
            try:
                yield d
            except BaseException:
                _remove_empty(made)
                raise
            return
        _remove_empty(made)
    yield None


def given_cache_dir(cache_dir: str | os.PathLike) -> Path:
    """``data.cache_dir`` as a folder: a file there is refused (a cache would otherwise never
    be written or read, silently); a folder that cannot be made or written gets one warning
    (the data is then decoded again on every run)."""
    d = Path(cache_dir).expanduser()
    probe = nearest_existing(d)
    if not probe.is_dir():
        raise DataError(
            f"data.cache_dir {d} is not a folder ({probe} is a file); give a folder for the "
            "decoded-data cache, or drop data.cache_dir"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        warnings.warn(
            f"data.cache_dir {d} cannot be written: no cache is kept, the data is decoded again "
            "on every run; give a writable folder",
            stacklevel=3,
        )
    return d


def is_writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK | os.X_OK)


def _check_member(m: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts or m.name.startswith(("/", "\\")):
        raise DataError(
            f"refusing to extract {archive}: member {m.name!r} points outside the target"
        )
    if m.issym() or m.islnk():
        raise DataError(f"refusing to extract {archive}: member {m.name!r} is a link")
    if not (m.isfile() or m.isdir()):
        raise DataError(f"refusing to extract {archive}: member {m.name!r} is not a file or folder")
    parts = [p for p in name.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    only: Callable[[str], bool] | None = None,
) -> Path:
    """Extract a .tar/.tar.gz into ``dest``: regular files and folders only, no absolute paths,
    no ``..``, no links (a bad member raises :class:`DataError` before anything is written).
    ``only(member_name)``: extract just the members it accepts."""
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            checked = [(m, _check_member(m, archive)) for m in members]
            dest.mkdir(parents=True, exist_ok=True)
            base = dest.resolve()
            for m, rel in checked:
                if rel is None or (only is not None and not only(m.name)):
                    continue
                target = (base / rel).resolve()
                if base != target and base not in target.parents:
                    raise DataError(f"refusing to extract {archive}: {m.name!r} escapes {dest}")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                assert src is not None
                tmp = target.with_name(target.name + ".part")
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(tmp, target)
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, PermissionError):
            raise DataError(f"cannot extract {archive} into {dest}: {e}") from None
        raise DataError(
            f"archive {archive} is corrupt or truncated ({e}); delete it and fetch it again"
        ) from None
    return dest


def file_digest(path: str | os.PathLike, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` (via ``dest.part``), verifying md5 and/or sha256 when given.

    No network, an HTTP error or a checksum mismatch raise :class:`DataError` saying where to put
    the file by hand; a partial download never lands at ``dest``.
    """
    dest = Path(dest)
    made = _missing(dest.parent)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hm, hs = hashlib.md5(), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as out:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                out.write(chunk)
                hm.update(chunk)
                hs.update(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        _remove_empty(made)
        reason = getattr(e, "reason", e)
        raise DataError(
            f"could not download {url} ({reason}); no network? Fetch it elsewhere and place it at {dest}"
        ) from None
    for name, want, got in (("md5", md5, hm.hexdigest()), ("sha256", sha256, hs.hexdigest())):
        if want and want.lower() != got:
            part.unlink(missing_ok=True)
            _remove_empty(made)
            raise DataError(
                f"checksum mismatch for {url}: {name} {got}, expected {want}; the download is "
                "corrupt or not the official file (nothing was kept)"
            )
    os.replace(part, dest)
    return dest


def cache_key(parts: Iterable[Any]) -> str:
    """A short stable hash of the JSON of ``parts`` (paths, sizes, mtimes, options)."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_cached_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
    """Write ``arrays`` + ``meta`` to an uncompressed .npz atomically; False if not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.part.npz")
        np.savez(tmp, __meta__=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def load_cached_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Read a cache written by :func:`save_cached_arrays`; None if absent. A cache that cannot
    be read (truncated by a full disk or a killed process, or not a cache at all) is removed
    with a one-line warning and None is returned, so the caller decodes the data again and
    writes a new one."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
            meta = json.loads(str(z["__meta__"]))
        if not isinstance(meta, dict):
            raise ValueError("no metadata")
        return arrays, meta
    except Exception as exc:  # a damaged zip fails in many ways (BadZipFile, EOFError, ...)
        why = type(exc).__name__
    warnings.warn(f"the cache {path} is damaged ({why}); rebuilding it", stacklevel=2)
    with contextlib.suppress(OSError):
        path.unlink()
    return None
