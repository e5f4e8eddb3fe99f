"""SVHN-LT and STL-10-LT from the official files (``data.name: svhn | stl10``).

SVHN: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5, read with ``scipy.io.loadmat``):
``X`` is (32, 32, 3, N) uint8 and ``y`` (N, 1) holds 1..10, where 10 means the digit 0; labels
here are the digits themselves (class ``c`` = digit ``c``). SVHN is imbalanced to begin with, so
the profile starts from ``n_max = N // 10`` (7,325 images, as the official long-tail code's
``len(data) / 10``) and classes with fewer images keep what they have (recorded and warned:
``info["capped"]``). Unlike the released loader no label is ever attached to an image that does
not exist. Only the ``train`` split is used for training: ``extra_32x32.mat`` (531,131 easier
images) is never read, as in the long-tail SVHN protocol of the released code (its loader is
torchvision's ``SVHN(split="train")``); when the file lies beside the others a note in
``info["notes"]`` says it was left out.

STL-10: ``stl10_binary/{train,test}_{X,y}.bin``: X is uint8 (N, 3, 96, 96) stored column-major
(each channel transposed), y holds 1..10. 500 training images per class (``n_max`` 500), 800 test
images per class; kept at 96 x 96 unless ``data.size`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import DataBundle
from .bundle import build_lt_bundle
from .official import check_checksums, locate_files
from .registry import register_dataset

__all__ = [
    "STL10_CLASSES",
    "STL10_MEAN",
    "STL10_STD",
    "SVHN_MEAN",
    "SVHN_STD",
    "load_stl10_lt",
    "load_svhn_lt",
    "read_stl10",
    "read_svhn_mat",
]

# per-channel statistics of the full official training split (0..1 scale)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
STL10_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``*_32x32.mat``: images uint8 (N, 3, 32, 32), labels int64 digits 0..9."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        d = loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DataError(f"{path} is not a readable SVHN .mat file ({e})") from None
    if "X" not in d or "y" not in d:
        raise DataError(f"{path} lacks the X / y arrays of the SVHN format")
    x, y = np.asarray(d["X"]), np.asarray(d["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: expected X of shape (32, 32, 3, N) and N labels, got {x.shape}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: SVHN labels must lie in 1..10, got {y.min()}..{y.max()}")
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1).astype(np.uint8, copy=False))
    return x, y % 10


@register_dataset("svhn")
def load_svhn_lt(cfg: Any) -> DataBundle:
    """SVHN-LT: long-tailed ``train_32x32.mat``, full ``test_32x32.mat``."""
    paths, notes = locate_files("svhn", cfg.root, getattr(cfg, "download", False))
    train = read_svhn_mat(paths["train"])
    test = read_svhn_mat(paths["test"])
    if (paths["train"].parent / "extra_32x32.mat").is_file():
        notes = [
            *notes,
            "extra_32x32.mat not used: SVHN-LT is drawn from train_32x32.mat alone "
            "(the released long-tail protocol)",
        ]
    info = {
        "source": str(paths["train"].parent),
        "format": "svhn-mat",
        "checksums": check_checksums("svhn", paths),
        "notes": notes,
    }
    classes = [str(i) for i in range(10)]
    return build_lt_bundle(
        "svhn",
        train,
        test,
        classes,
        cfg,
        info,
        SVHN_MEAN,
        SVHN_STD,
        "standard",
        n_max=len(train[1]) // 10,
    )


def _read_bin(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    per = int(np.prod(shape))
    if raw.size % per:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {what} ({per} bytes each)"
        )
    return raw.reshape(-1, *shape)


def read_stl10(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``{split}_X.bin`` / ``{split}_y.bin``: images uint8 (N, 3, 96, 96), labels int64 0..9."""
    folder = Path(folder)
    x = _read_bin(folder / f"{split}_X.bin", (3, 96, 96), "96x96 RGB images")
    x = np.ascontiguousarray(x.transpose(0, 1, 3, 2))  # stored column-major per channel
    y = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64)
    if len(y) != len(x):
        raise DataError(f"{folder}: {len(x)} images in {split}_X.bin but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{folder}/{split}_y.bin: labels must lie in 1..10")
    return x, y - 1


def _stl10_classes(folder: Path) -> list[str]:
    f = folder / "class_names.txt"
    if f.is_file():
        names = [s.strip() for s in f.read_text().splitlines() if s.strip()]
        if len(names) == 10:
            return names
    return list(STL10_CLASSES)


@register_dataset("stl10")
def load_stl10_lt(cfg: Any) -> DataBundle:
    """STL-10-LT: long-tailed labelled training images (500 per class), full test set."""
    paths, notes = locate_files("stl10", cfg.root, getattr(cfg, "download", False))
    folder = paths["train_x"].parent
    info = {
        "source": str(folder),
        "format": "stl10-binary",
        "checksums": check_checksums("stl10", paths),
        "notes": notes,
    }
    train, test = read_stl10(folder, "train"), read_stl10(folder, "test")
    return build_lt_bundle(
        "stl10",
        train,
        test,
        _stl10_classes(folder),
        cfg,
        info,
        STL10_MEAN,
        STL10_STD,
        "standard",
        n_max=len(train[1]) // 10,
    )
