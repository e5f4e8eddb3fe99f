"""CIFAR-10/100: the official python-pickle folders and archives, and the CIFAR-10 JPEG copy.

Search order for ``data.name: cifar10 | cifar100``: ``data.root``, ``$NCOLLAPSE_DATA``,
``./data``, ``~/.cache/ncollapse``; in each, the extracted folder (``cifar-10-batches-py`` /
``cifar-100-python``, or the folder itself) and then the official archive
(``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, extracted safely on first use).
For CIFAR-10 the JPEG image-folder copy ``../shared/datasets/cifar10-jpeg.tar.gz`` (relative to
the working directory, then to the repository root) is the last resort; ``info["source"]`` says
which was used. With ``data.download`` the official archive is fetched (md5-checked) into the
first search directory that is writable.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import DataBundle
from .bundle import build_lt_bundle
from .files import (
    download_file,
    download_place,
    file_digest,
    given_cache_dir,
    is_writable_dir,
    repo_root,
    safe_extract,
    search_dirs,
)
from .imagefolder import CIFAR10_CLASSES, read_imagefolder
from .registry import register_dataset
from .resize import check_size

__all__ = [
    "CIFAR_ARCHIVES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "download_cifar",
    "find_cifar",
    "load_cifar_lt",
    "read_cifar_folder",
]

# the official recipes normalise CIFAR-10 and CIFAR-100 with these values
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# Module-level so tests (and mirrors) can point them elsewhere.
CIFAR_ARCHIVES: dict[str, dict[str, str]] = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "filename": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "filename": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
    },
}
JPEG_COPY = "cifar10-jpeg.tar.gz"
JPEG_NOTE = (
    "CIFAR-10 JPEG copy (quality ~75, slightly lossy): accuracies run a little below figures "
    "published on the official pickle data; compare methods side by side on this copy only"
)

_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": (["train"], ["test"], "meta"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Allows only what the official CIFAR pickles contain (dicts, lists, numpy arrays)."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("copy_reg", "_reconstructor"),
            ("copyreg", "_reconstructor"),
            ("__builtin__", "object"),
            ("builtins", "object"),
            ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if module.startswith("numpy") and name in ("_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray  # type: ignore[no-redef]
            return getattr(multiarray, name)
        return super().find_class(
            module.replace("copy_reg", "copyreg").replace("__builtin__", "builtins"), name
        )


def _load_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"CIFAR file missing: {path}")
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
    ) as e:
        raise DataError(
            f"CIFAR file {path} is corrupt or not an official CIFAR pickle: {e}"
        ) from None
    if not isinstance(d, dict):
        raise DataError(f"CIFAR file {path} does not hold a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _names(v: Any, path: Path, key: str, k: int) -> list[str]:
    """The ``k`` class names of the meta file (bytes or text)."""
    if not isinstance(v, (list, tuple)) or len(v) != k:
        raise DataError(f"CIFAR file {path}: '{key}' must list the {k} class names, got {v!r:.80}")
    try:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v]
    except UnicodeDecodeError:
        raise DataError(f"CIFAR file {path}: the class names in '{key}' are not UTF-8") from None


def read_cifar_folder(
    folder: str | os.PathLike, name: str
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """Read an official ``cifar-10-batches-py`` / ``cifar-100-python`` folder.

    Returns ``((train_x, train_y), (test_x, test_y), classes)`` with images uint8 (N, 3, 32, 32)
    in the official order and int64 labels (CIFAR-100: the fine labels).
    """
    folder = Path(folder)
    train_files, test_files, meta_file = _FILES[name]
    label_key = "labels" if name == "cifar10" else "fine_labels"

    k = 10 if name == "cifar10" else 100

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for fn in files:
            d = _load_pickle(folder / fn)
            if "data" not in d or label_key not in d:
                raise DataError(f"CIFAR file {folder / fn} lacks 'data' or '{label_key}'")
            try:
                x = np.asarray(d["data"], dtype=np.uint8)
                y = np.asarray(d[label_key])
            except (ValueError, TypeError, OverflowError) as e:
                raise DataError(f"CIFAR file {folder / fn}: 'data' or '{label_key}': {e}") from None
            if y.ndim != 1 or (
                y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= k)
            ):
                raise DataError(
                    f"CIFAR file {folder / fn}: '{label_key}' must be integers 0..{k - 1}, one per "
                    f"image; it is not an official CIFAR file"
                )
            y = y.astype(np.int64)
            if x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
                raise DataError(
                    f"CIFAR file {folder / fn}: expected (N, 3072) data with N labels, got {x.shape} / {y.shape}"
                )
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    meta = _load_pickle(folder / meta_file)
    key = "label_names" if name == "cifar10" else "fine_label_names"
    classes = _names(meta.get(key), folder / meta_file, key, k)
    return read(train_files), read(test_files), classes


def _has_folder(d: Path, name: str) -> bool:
    train_files, test_files, meta_file = _FILES[name]
    return all((d / f).is_file() for f in [*train_files, *test_files, meta_file])


def _jpeg_candidates() -> list[Path]:
    out = [Path.cwd().parent / "shared" / "datasets" / JPEG_COPY]
    rr = repo_root()
    if rr is not None:
        out.append(rr.parent / "shared" / "datasets" / JPEG_COPY)
    return out


def _missing_files(d: Path, name: str, named: bool) -> list[str]:
    """The official files a partial CIFAR folder lacks ([] when complete or not one at all).
    A folder not ``named`` like the official one counts only when it holds the meta file."""
    train_files, test_files, meta_file = _FILES[name]
    wanted = [*train_files, *test_files, meta_file]
    have = [f for f in wanted if (d / f).is_file()]
    if not have or (not named and meta_file not in have):
        return []
    return [f for f in wanted if f not in have]


def find_cifar(name: str, root: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Locate CIFAR data: ``("folder" | "archive" | "jpeg", path)``; DataError listing every
    place searched when there is none, naming the missing files of a folder that holds only
    some of them, and naming ``root`` when it does not exist (nothing else is searched then)."""
    spec = CIFAR_ARCHIVES[name]
    searched: list[str] = []
    if root and not Path(root).expanduser().exists():
        raise DataError(
            f"{name} not found: data.root {Path(root).expanduser()} does not exist (nothing else "
            f"was searched). Point data.root at the folder holding {spec['folder']}/ or "
            f"{spec['filename']}, leave it unset to search the usual places, or add --download "
            "to fetch the archive there"
        )
    for d in search_dirs(root):
        for cand in (d / spec["folder"], d):
            if _has_folder(cand, name):
                return "folder", cand
            missing = _missing_files(cand, name, named=cand != d)
            if missing:
                raise DataError(
                    f"{name} folder {cand} is incomplete: {', '.join(missing)} missing; restore "
                    f"them (or delete the folder and place the official {spec['filename']} "
                    "there, or rerun with --download)"
                )
        arch = d / spec["filename"]
        if arch.is_file():
            return "archive", arch
        if name == "cifar10" and (d / JPEG_COPY).is_file():
            return "jpeg", d / JPEG_COPY
        searched.append(str(d))
    if name == "cifar10":
        for p in _jpeg_candidates():
            if p.is_file():
                return "jpeg", p
            searched.append(str(p))
    raise DataError(
        f"{name} not found. Searched: {'; '.join(searched)}. Place the official "
        f"{spec['filename']} (from {spec['url']}) or its extracted {spec['folder']}/ in one of "
        "these directories (set data.root or $NCOLLAPSE_DATA to choose), or rerun with --download "
        "(data.download=true) where there is a network"
    )


def download_cifar(name: str, dest_dir: str | os.PathLike) -> Path:
    """Fetch the official archive for ``name`` into ``dest_dir`` (md5-checked); returns its path."""
    spec = CIFAR_ARCHIVES[name]
    return download_file(
        spec["url"],
        Path(dest_dir) / spec["filename"],
        md5=spec.get("md5"),
        sha256=spec.get("sha256"),
    )


def _extract_archive(arch: Path, name: str, cache_dir: str | None) -> Path:
    spec = CIFAR_ARCHIVES[name]
    targets = [given_cache_dir(cache_dir)] if cache_dir else []
    targets += [arch.parent, Path.home() / ".cache" / "ncollapse"]
    for t in targets:
        if _has_folder(t / spec["folder"], name):
            return t / spec["folder"]
    for t in targets:
        if is_writable_dir(t):
            safe_extract(arch, t)
            if _has_folder(t / spec["folder"], name):
                return t / spec["folder"]
            raise DataError(
                f"archive {arch} does not contain the official {spec['folder']}/ folder"
            )
    raise DataError(
        f"no writable directory to extract {arch} into (tried {', '.join(map(str, targets))})"
    )


@register_dataset("cifar100")
@register_dataset("cifar10")
def load_cifar_lt(cfg: Any) -> DataBundle:
    """CIFAR-10/100-LT by the LDAM protocol (Cao et al., 2019): long-tailed train set, full balanced test set."""
    name = cfg.name
    try:
        kind, path = find_cifar(name, cfg.root)
    except DataError as exc:
        if not cfg.download or "incomplete" in str(exc):
            raise
        with download_place(cfg.root) as dest:
            if dest is None:
                raise
            kind, path = "archive", download_cifar(name, dest)
    info: dict[str, Any] = {"source": str(path), "format": kind}
    if kind == "jpeg":
        arrays, classes, meta = read_imagefolder(
            path,
            CIFAR10_CLASSES,
            cache_dir=cfg.cache_dir,
            size=check_size(getattr(cfg, "size", None)),
        )
        train, test = arrays["train"], arrays["test"]
        info.update(note=JPEG_NOTE, cache=meta)
        warnings.warn(f"using the {JPEG_NOTE} ({path})", stacklevel=2)
    else:
        if kind == "archive":
            info["archive"] = str(path)
            spec = CIFAR_ARCHIVES[name]
            if spec.get("md5") and not (path.parent / spec["folder"]).is_dir():
                got = file_digest(path, "md5")
                if got != spec["md5"]:
                    raise DataError(
                        f"{path}: md5 {got} is not the official {spec['md5']}; fetch it again"
                    )
            path = _extract_archive(path, name, cfg.cache_dir)
            info["source"] = str(path)
        train, test, classes = read_cifar_folder(path, name)
    return build_lt_bundle(name, train, test, classes, cfg, info, CIFAR_MEAN, CIFAR_STD, "standard")
