"""Image-folder trees ``<split>/<class>/*.{jpg,png,...}``, from a folder or straight from a
``.tar.gz`` of one, decoded once with Pillow and cached as uint8 arrays (.npz).

The archive is read member by member into memory (nothing from it is written to disk, so a
hostile member name cannot escape anywhere); the decoded arrays are cached in ``cache_dir`` (by
default the user cache directory, :func:`~ncollapse.data.files.default_cache_dir`: never the
data folder, which may be shared or read-only) under a key made of the source's path, size and
mtime and the class order. A folder's symbolic links (class folders, split folders, image files)
are followed; a link that leads back into a folder it sits in is refused as a loop.
"""

from __future__ import annotations

import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..config import option
from ..errors import ConfigError, DataError
from .base import DataBundle
from .bundle import build_lt_bundle
from .decode import decode_images
from .files import (
    cache_key,
    default_cache_dir,
    given_cache_dir,
    load_cached_arrays,
    save_cached_arrays,
)
from .registry import register_dataset
from .resize import check_size

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "build_lt_bundle",
    "decode_images",
    "load_imagefolder_lt",
    "read_imagefolder",
]

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


#: the folder beside the data where versions before 0.2 cached the decoded arrays (read when
#: present, never written)
LEGACY_CACHE = ".ncollapse-cache"


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _split_class_file(rel: str) -> tuple[str, str, str] | None:
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".")]
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return None
    if parts[-1].startswith("."):
        return None
    return parts[-3], parts[-2], parts[-1]


def _walk(source: Path) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` under ``source``, top down in name order, following symbolic
    links to folders and files; a link to a folder that contains it (a loop) is a DataError."""
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = []
    if not source.is_dir():  # a file that is no archive: no images (the caller says so)
        return
    try:
        st = source.stat()
    except OSError as exc:
        raise DataError(f"cannot read {source}: {exc.strerror}") from None
    stack.append((source, ((st.st_dev, st.st_ino),)))
    while stack:
        here, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot read the folder {here}: {exc.strerror}") from None
        files, dirs = [], []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(e.name)
                continue
            st = os.stat(e.path)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                target = os.path.realpath(e.path)
                raise DataError(
                    f"{e.path} is a symbolic link to {target}, a folder that contains it (a "
                    "loop); remove the link or point it elsewhere"
                )
            dirs.append((Path(e.path), (*ancestors, key)))
        yield str(here), files
        stack.extend(reversed(dirs))


def _fingerprint(source: Path) -> list[Any]:
    """What the cache key is made of: path, size and mtime (every image file's, for a folder)."""
    if _is_archive(source):
        st = source.stat()
        return ["archive", str(source.resolve()), st.st_size, st.st_mtime_ns]
    files = []
    for dirpath, names in _walk(source):
        for n in names:
            full = Path(dirpath, n)
            rel = full.relative_to(source).as_posix()
            if _split_class_file(rel):
                try:
                    st = full.stat()
                except OSError as exc:
                    raise DataError(f"cannot read {full}: {exc.strerror}") from None
                files.append((rel, st.st_size, st.st_mtime_ns))
    files.sort()
    return ["folder", str(source.resolve()), files]


def _class_dir(rel: str) -> tuple[str, str] | None:
    """``(split, class)`` of a folder ``<split>/<class>`` (hidden folders are not classes)."""
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".")]
    if len(parts) != 2 or any(p.startswith(".") for p in parts):
        return None
    return parts[0], parts[1]


def _scan_read(
    source: Path,
) -> tuple[dict[tuple[str, str], list[tuple[str, str]]], dict[str, bytes]]:
    """One pass: ``{(split, class): [(file_name, locator), ...]}`` (a class folder without
    images gets an empty list) and each locator's bytes."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    blobs: dict[str, bytes] = {}
    if _is_archive(source):
        try:
            with tarfile.open(source, "r:*") as tf:
                for m in tf:
                    if m.isdir() and _class_dir(m.name):
                        groups.setdefault(_class_dir(m.name), [])  # type: ignore[arg-type]
                    if m.isfile():
                        scf = _split_class_file(m.name)
                        if scf:
                            groups.setdefault(scf[:2], []).append((scf[2], m.name))
                            f = tf.extractfile(m)
                            assert f is not None
                            blobs[m.name] = f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"archive {source} is corrupt or truncated: {e}") from None
        return groups, blobs
    for dirpath, names in _walk(source):
        here = _class_dir(Path(dirpath).relative_to(source).as_posix())
        if here is not None:
            groups.setdefault(here, [])
        for n in names:
            rel = Path(dirpath, n).relative_to(source).as_posix()
            scf = _split_class_file(rel)
            if scf:
                groups.setdefault(scf[:2], []).append((scf[2], rel))
                try:
                    blobs[rel] = (source / rel).read_bytes()
                except OSError as exc:
                    why = "a broken symbolic link" if (source / rel).is_symlink() else exc.strerror
                    raise DataError(f"cannot read {source / rel}: {why}") from None
    return groups, blobs


def read_imagefolder(
    source: str | os.PathLike,
    class_order: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "test"),
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    use_cache: bool = True,
    size: int | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict[str, Any]]:
    """Read ``<split>/<class>/<file>`` images from a folder or .tar(.gz) into uint8 arrays,
    fitted to ``size x size`` when given (the cache key includes the size).

    Labels follow ``class_order`` (default: sorted folder names of the first split); within a
    class, files are in name order. Returns ``({split: (images NCHW, labels)}, classes, meta)``
    with ``meta`` holding the cache path, whether it was hit and the decode/load seconds.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"image folder not found: {source}")
    t0 = time.perf_counter()
    fp = _fingerprint(source)
    cdir = given_cache_dir(cache_dir) if cache_dir is not None else default_cache_dir()
    size = check_size(size)
    order_key = list(class_order) if class_order is not None else None
    key = cache_key([fp, order_key, list(splits)] + ([] if size is None else [{"size": size}]))
    stem = source.name.split(".")[0] or "images"
    cpath = cdir / f"{stem}-{key}.npz"
    meta: dict[str, Any] = {"cache_path": str(cpath), "cache_hit": False}
    if use_cache:
        hit = load_cached_arrays(cpath)
        if hit is None and cache_dir is None:  # one written beside the data by earlier versions
            beside = (source.parent if _is_archive(source) else source) / LEGACY_CACHE
            if (beside / cpath.name).is_file():
                hit = load_cached_arrays(beside / cpath.name)
                meta["cache_path"] = str(beside / cpath.name)
        if hit is not None:
            arrays, cmeta = hit
            if "classes" in cmeta and all(
                f"{s}_images" in arrays and f"{s}_labels" in arrays for s in splits
            ):
                meta.update(cache_hit=True, seconds=round(time.perf_counter() - t0, 3))
                out = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in splits}
                return out, list(cmeta["classes"]), meta

    groups, blobs = _scan_read(source)
    empty = [
        f"{s}/{c}" for s in splits for (ss, c), f in sorted(groups.items()) if ss == s and not f
    ]
    groups = {k: v for k, v in groups.items() if v}
    if empty and groups:
        raise DataError(
            f"class folder {source}/{empty[0]} holds no images"
            + (f" (nor {', '.join(empty[1:])})" if len(empty) > 1 else "")
            + f"; every class needs images ({', '.join(IMAGE_EXTENSIONS)}): add some, or remove "
            "the class's folder from every split"
        )
    if not groups:
        raise DataError(
            f"no images found in {source}; expected <split>/<class>/<image> with split in "
            f"{', '.join(splits)} and extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    found_splits = sorted({s for s, _ in groups})
    for s in splits:
        if s not in found_splits:
            raise DataError(f"{source} has no '{s}' split (found: {', '.join(found_splits)})")
    if class_order is None:
        classes = sorted({c for s, c in groups if s == splits[0]})
    else:
        classes = list(class_order)
        if len(set(classes)) != len(classes):
            raise DataError(f"class_order has duplicates: {classes}")
    if len(classes) < 2:
        raise DataError(
            f"{source} holds one class ({', '.join(classes)}); a classifier needs at least two "
            f"class folders in each of {', '.join(splits)}"
        )
    for s in splits:
        present = {c for ss, c in groups if ss == s}
        missing = [c for c in classes if c not in present]
        extra = sorted(present - set(classes))
        if missing or extra:
            raise DataError(
                f"{source}/{s}: class folders do not match the class order"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; not in class_order: {', '.join(extra)}" if extra else "")
            )

    order: list[tuple[str, int, str, str]] = []  # split, label, locator, display name
    for s in splits:
        for y, c in enumerate(classes):
            for _fname, loc in sorted(groups[(s, c)]):
                order.append(
                    (s, y, loc, f"{source}:{loc}" if _is_archive(source) else str(source / loc))
                )
    t1 = time.perf_counter()
    images = decode_images(
        [(disp, blobs[loc]) for _s, _y, loc, disp in order], workers=workers, size=size
    )
    t2 = time.perf_counter()
    labels = np.array([y for _s, y, _l, _d in order], dtype=np.int64)
    split_of = np.array([s for s, *_ in order])
    out = {}
    for s in splits:
        sel = np.where(split_of == s)[0]
        out[s] = (np.ascontiguousarray(images[sel]), labels[sel])
    if use_cache:
        arrays = {
            f"{s}_{k}": v
            for s, (im, lb) in out.items()
            for k, v in (("images", im), ("labels", lb))
        }
        meta["cache_written"] = save_cached_arrays(
            cpath, arrays, {"classes": classes, "source": str(source)}
        )
    meta.update(
        read_seconds=round(t1 - t0, 3),
        decode_seconds=round(t2 - t1, 3),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return out, classes, meta


def _check_as_given(cfg: Any) -> None:
    """An image folder used as given has no unused training images to validate on."""
    d = cfg.data
    if d.name == "imagefolder" and d.imbalance is None and getattr(d, "val", "none") == "unused":
        raise ConfigError(
            "data.val=unused holds out training images that a long-tail subset leaves unused, "
            "but an image folder trains on every image it holds (data.imbalance not set): set "
            "data.imbalance to train on a long-tailed subset of it, or drop data.val"
        )


@register_dataset(
    "imagefolder",
    options={
        "data.class_order": option(
            None, "explicit class order (label = index)", type=list[str] | None
        )
    },
    imbalance=None,  # your own data: every image, as given, unless data.imbalance is set
    check=_check_as_given,
)
def load_imagefolder_lt(cfg: Any) -> DataBundle:
    """``data.name: imagefolder``: ``data.root`` is a folder or .tar.gz with train/ and test/.

    Every training image is used as given unless ``data.imbalance`` is set; then the training
    set is the long-tailed subset of the profile, in label order (sorted folder names, or
    ``data.class_order``), from ``n_max`` = the largest class."""
    if not cfg.root:
        raise DataError(
            "data.name=imagefolder needs data.root: a folder (or .tar.gz) holding "
            "train/<class>/*.png and test/<class>/*.png"
        )
    size = check_size(getattr(cfg, "size", None))
    arrays, classes, meta = read_imagefolder(
        cfg.root, cfg.class_order, cache_dir=cfg.cache_dir, size=size
    )
    info = {
        "source": str(Path(cfg.root).expanduser()),
        "format": "imagefolder",
        "class_order": "given" if cfg.class_order else "sorted folder names",
        "cache": meta,
    }
    return build_lt_bundle(
        "imagefolder", arrays["train"], arrays["test"], classes, cfg, info, None, None, "standard"
    )
