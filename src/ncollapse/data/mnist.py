"""MNIST-LT and Fashion-MNIST-LT from the four official IDX files, gzipped or not
(``data.name: mnist | fashion_mnist``).

IDX format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then
each dimension as a big-endian int32, then the data. Images are 28 x 28 grey (one channel).
The profile starts from ``n_max = N // 10`` (6,000; MNIST's classes are not all that size, so
the smaller ones are capped at what they have). MNIST trains without augmentation (a mirrored
digit is another symbol); Fashion-MNIST with the standard crop and flip.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import DataBundle
from .bundle import build_lt_bundle
from .official import check_checksums, locate_files
from .registry import register_dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "load_fashion_mnist_lt",
    "load_mnist_lt",
    "read_idx",
]

# statistics of the full official training split (0..1 scale)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: str | Path) -> np.ndarray:
    """An unsigned-byte IDX file (``.gz`` or plain) as a uint8 array of its declared shape."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    start = 4 + 4 * ndim
    if ndim < 1 or len(data) < start:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(data[4:start], dtype=">i4"))
    n = math.prod(shape) if min(shape) >= 0 else -1  # exact: no int64 wrap-around
    if len(data) - start != n:
        raise DataError(
            f"{path}: header declares shape {shape} ({n} bytes) but {len(data) - start} bytes follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape).copy()


def _split(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(paths[f"{split}_x"]), read_idx(paths[f"{split}_y"])
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"{paths[f'{split}_x'].name}: expected (N, H, W) images and N labels, got "
            f"{x.shape} and {y.shape}"
        )
    if len(y) and y.max() > 9:
        raise DataError(f"{paths[f'{split}_y']}: labels must lie in 0..9, got up to {y.max()}")
    return np.ascontiguousarray(x[:, None]), y.astype(np.int64)


def _load(name: str, cfg: Any, classes: list[str], mean, std, augment: str) -> DataBundle:
    paths, notes = locate_files(name, cfg.root, getattr(cfg, "download", False))
    info = {
        "source": str(paths["train_x"].parent),
        "format": "idx",
        "checksums": check_checksums(name, paths),
        "notes": notes,
    }
    train, test = _split(paths, "train"), _split(paths, "test")
    return build_lt_bundle(
        name, train, test, classes, cfg, info, mean, std, augment, n_max=len(train[1]) // 10
    )


@register_dataset("mnist")
def load_mnist_lt(cfg: Any) -> DataBundle:
    """MNIST-LT (1 x 28 x 28, no augmentation by default)."""
    return _load("mnist", cfg, [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD, "none")


@register_dataset("fashion_mnist")
def load_fashion_mnist_lt(cfg: Any) -> DataBundle:
    """Fashion-MNIST-LT (1 x 28 x 28, crop + flip by default)."""
    return _load(
        "fashion_mnist",
        cfg,
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        "standard",
    )
