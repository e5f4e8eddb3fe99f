"""Where the official files of SVHN, STL-10, MNIST and Fashion-MNIST are looked for, their
published md5 checksums, and the download of missing ones (``data.download``).

Search order for ``data.name: X``: ``data.root``, ``$NCOLLAPSE_DATA``, ``./data``,
``~/.cache/ncollapse``, then any system folder listed for the dataset (Debian's
``dataset-fashion-mnist`` package installs to ``/usr/share/datasets/fashion-mnist``). In each, the
files are looked for in the dataset's usual sub-folders (for example ``svhn/``, ``MNIST/raw/``
as torchvision lays them out) and in the directory itself. IDX files may be gzipped or not.

Checksums: a download is verified against the published md5 (a mismatch keeps nothing). A file
found on disk is read and checked by format; when its md5 differs from the published one (for
example a re-compressed copy) ``info["checksums"]`` says so and one warning names it (no warning
for a system folder's packaged copy: Debian re-compresses Fashion-MNIST's .gz files).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .files import download_file, download_place, file_digest, is_writable_dir, search_dirs

__all__ = ["OFFICIAL", "OfficialFiles", "check_checksums", "locate_files"]


@dataclass(frozen=True)
class OfficialFiles:
    """One dataset's files: ``files`` maps a role (``train_x``, ...) to the official file name,
    ``md5`` a file name to its published md5, ``url`` the folder they are downloaded from."""

    title: str
    files: dict[str, str]
    md5: dict[str, str]
    subdirs: tuple[str, ...]
    url: str | None = None
    system_dirs: tuple[str, ...] = ()
    gz_optional: bool = False  # IDX: "x.gz" or the uncompressed "x"
    archive: str | None = None  # a .tar.gz that holds the files (in archive_folder/)
    archive_md5: str | None = None
    archive_folder: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}


# Module-level so tests (and mirrors) can point them elsewhere. md5 values as published with
# the datasets (and used by torchvision's readers).
OFFICIAL: dict[str, OfficialFiles] = {
    "svhn": OfficialFiles(
        title="SVHN (format 2, cropped digits)",
        files={"train": "train_32x32.mat", "test": "test_32x32.mat"},
        md5={
            "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        },
        subdirs=("svhn", "SVHN", "."),
        url="http://ufldl.stanford.edu/housenumbers/",
    ),
    "stl10": OfficialFiles(
        title="STL-10 (binary version)",
        files={
            "train_x": "train_X.bin",
            "train_y": "train_y.bin",
            "test_x": "test_X.bin",
            "test_y": "test_y.bin",
        },
        md5={
            "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
            "train_y.bin": "5a34089d4802c674881badbb80307741",
            "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
            "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
        },
        subdirs=("stl10_binary", "stl10/stl10_binary", "."),
        url="http://ai.stanford.edu/~acoates/stl10/",
        archive="stl10_binary.tar.gz",
        archive_md5="91f7769df0f17e558f3565bffb0c7dfb",
        archive_folder="stl10_binary",
    ),
    "mnist": OfficialFiles(
        title="MNIST",
        files=IDX_FILES,
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        subdirs=("mnist", "MNIST/raw", "MNIST", "."),
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        gz_optional=True,
    ),
    "fashion_mnist": OfficialFiles(
        title="Fashion-MNIST",
        files=IDX_FILES,
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "."),
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        gz_optional=True,
    ),
}


def _find_in(folder: Path, spec: OfficialFiles) -> dict[str, Path] | None:
    found: dict[str, Path] = {}
    for role, fname in spec.files.items():
        cands = [folder / fname]
        if spec.gz_optional and fname.endswith(".gz"):
            cands.append(folder / fname[:-3])
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            return None
        found[role] = hit
    return found


def _candidates(name: str, root: str | os.PathLike | None) -> list[Path]:
    spec = OFFICIAL[name]
    return [*search_dirs(root), *(Path(d) for d in spec.system_dirs)]


def locate_files(
    name: str, root: str | os.PathLike | None, download: bool = False
) -> tuple[dict[str, Path], list[str]]:
    """``({role: path}, notes)`` for dataset ``name``; downloads into the first writable search
    directory when ``download`` and nothing is found; otherwise a :class:`DataError` listing every
    place searched and the files to put there."""
    spec = OFFICIAL[name]
    searched: list[str] = []
    for d in _candidates(name, root):
        for sub in spec.subdirs:
            folder = d / sub if sub != "." else d
            found = _find_in(folder, spec)
            if found:
                return found, []
        if spec.archive and (d / spec.archive).is_file():
            return _from_archive(d / spec.archive, spec), [f"extracted from {d / spec.archive}"]
        searched.append(str(d))
    wanted = ", ".join(spec.files.values())
    if download and spec.url:
        with download_place(root) as dest:
            if dest is not None:
                return _download(spec, dest / spec.subdirs[0]), ["downloaded"]
    where = f" or {spec.archive}" if spec.archive else ""
    raise DataError(
        f"{spec.title} not found. Searched: {'; '.join(searched)} (and their sub-folders "
        f"{', '.join(s for s in spec.subdirs if s != '.')}). Place the official files ({wanted}{where}"
        f", from {spec.url}) in one of them (set data.root or $NCOLLAPSE_DATA to choose), or "
        "rerun with --download (data.download=true) where there is a network"
    )


def _download(spec: OfficialFiles, dest: Path) -> dict[str, Path]:
    assert spec.url is not None
    if spec.archive:
        arch = download_file(
            spec.url + spec.archive, dest.parent / spec.archive, md5=spec.archive_md5
        )
        return _from_archive(arch, spec)
    return {
        role: download_file(spec.url + fname, dest / fname, md5=spec.md5.get(fname))
        for role, fname in spec.files.items()
    }


def _from_archive(arch: Path, spec: OfficialFiles) -> dict[str, Path]:
    """Extract only the needed files of the archive beside it (or in the cache), once."""
    from .files import default_cache_dir, safe_extract

    assert spec.archive_folder is not None
    for base in (arch.parent, default_cache_dir()):
        found = _find_in(base / spec.archive_folder, spec)
        if found:
            return found
    want = {f"{spec.archive_folder}/{f}" for f in spec.files.values()}
    if spec.archive_md5:
        got = file_digest(arch, "md5")
        if got != spec.archive_md5:
            raise DataError(
                f"{arch}: md5 {got} is not the official {spec.archive_md5}; fetch it again"
            )
    for base in (arch.parent, default_cache_dir()):
        if is_writable_dir(base):
            safe_extract(arch, base, only=lambda n: n.lstrip("./") in want)
            found = _find_in(base / spec.archive_folder, spec)
            if found:
                return found
            raise DataError(f"archive {arch} does not hold {', '.join(sorted(want))}")
    raise DataError(f"no writable directory to extract {arch} into")


def check_checksums(name: str, paths: dict[str, Path]) -> dict[str, str]:
    """``{file: "official" | "differs" | "no published checksum"}``; warns once (one line) when
    some differ. Uncompressed IDX files have no published checksum."""
    spec = OFFICIAL[name]
    out: dict[str, str] = {}
    for p in paths.values():
        want = spec.md5.get(p.name)
        if want is None:
            out[p.name] = "no published checksum"
        else:
            out[p.name] = "official" if file_digest(p, "md5") == want else "differs"
    # a distribution's packaged copy (Debian re-compresses the .gz files) is expected to differ
    system = any(Path(d) in p.parents for d in spec.system_dirs for p in paths.values())
    bad = [] if system else [f for f, v in out.items() if v == "differs"]
    if bad:
        warnings.warn(
            f"{name}: md5 of {', '.join(bad)} differs from the official download (a re-compressed "
            "or modified copy?); the contents were read and checked by format",
            stacklevel=3,
        )
    return out
