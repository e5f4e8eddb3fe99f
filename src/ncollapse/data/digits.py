"""Long-tailed handwritten digits: scikit-learn's bundled 8x8 digits, no download needed."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..config import option
from .base import ArrayDataset, DataBundle
from .longtail import check_training_classes, long_tail_counts, long_tail_subset
from .registry import register_dataset
from .split import validation_split

__all__ = ["channel_stats", "load_digits_lt"]


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) on the 0..1 scale."""
    x = torch.as_tensor(images)
    c = x.shape[1]
    x = x.transpose(0, 1).reshape(c, -1).to(torch.float64) / 255.0
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False).clamp_min(1e-8)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def cap_warning(name: str, capped: dict[int, tuple[int, int]], classes: list[str]) -> None:
    """Warn that some classes had fewer images than the profile asked for."""
    if capped:
        parts = ", ".join(f"{classes[c]}: {a} asked, {h} available" for c, (a, h) in capped.items())
        warnings.warn(
            f"{name}: long-tail counts capped at the images that exist ({parts})", stacklevel=3
        )


def load_digits_lt(
    imbalance: float = 0.05,
    profile: str = "exp",
    subset_seed: int = 0,
    test_fraction: float = 0.3,
    val: str = "none",
    val_per_class: int = 1000,
    val_seed: int = 0,
) -> DataBundle:
    """Long-tailed digits (10 classes, 1 x 8 x 8, uint8 0..255).

    Each class is split into a test part of the same size for every class (``test_fraction`` of
    the smallest class, chosen with ``RandomState(subset_seed)``) and a training pool; the pool is
    long-tailed with :func:`~ncollapse.data.longtail.long_tail_indices` (``n_max`` = the smallest
    pool, so the profile starts from a balanced set). Mean/std come from the training images.
    ``val="unused"`` holds out up to ``val_per_class`` of the pool images the subset left unused
    (never test images; see :mod:`ncollapse.data.split`).
    """
    from types import SimpleNamespace

    from sklearn.datasets import load_digits

    from ..errors import DataError

    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    d = load_digits()
    raw = np.asarray(d.images, dtype=np.float64)  # (N, 8, 8), 0..16
    images = np.clip(np.rint(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    labels = np.asarray(d.target, dtype=np.int64)
    k = 10
    classes = [str(i) for i in range(k)]
    per_class = np.bincount(labels, minlength=k)
    n_test = max(1, int(float(test_fraction) * int(per_class.min())))

    rng = np.random.RandomState(subset_seed)
    test_parts, pool_parts = [], []
    for c in range(k):
        idx = np.where(labels == c)[0]
        perm = idx[rng.permutation(len(idx))]
        test_parts.append(np.sort(perm[:n_test]))
        pool_parts.append(np.sort(perm[n_test:]))
    test_idx = np.concatenate(test_parts)
    pool_idx = np.concatenate(pool_parts)
    pool_labels = labels[pool_idx]
    n_max = int(min(len(p) for p in pool_parts))
    counts = long_tail_counts(n_max, k, imbalance, profile)
    check_training_classes(
        counts, classes, name="the digits training set", imbalance=imbalance, n_max=n_max,
        hint="" if float(test_fraction) <= 0.5 else f"or lower data.test_fraction (now "
        f"{float(test_fraction):g}), which holds out {n_test} images a class for testing",
    )  # fmt: skip
    sub, capped = long_tail_subset(pool_labels, counts, subset_seed)
    cap_warning("digits", capped, classes)
    train_idx = pool_idx[sub]
    opts = SimpleNamespace(val=val, val_per_class=val_per_class, val_seed=val_seed)
    val_sub, val_info = validation_split("digits", pool_labels, sub, classes, opts)

    train = ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(images[train_idx])),
        torch.from_numpy(labels[train_idx]),
        classes,
    )
    test = ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(images[test_idx])),
        torch.from_numpy(labels[test_idx]),
        classes,
    )
    va = None
    if val_sub is not None:
        val_idx = pool_idx[val_sub]
        va = ArrayDataset(
            torch.from_numpy(np.ascontiguousarray(images[val_idx])),
            torch.from_numpy(labels[val_idx]),
            classes,
        )
    mean, std = channel_stats(train.images)
    class_counts = train.class_counts()
    info = {
        "name": "digits",
        "source": "sklearn.datasets.load_digits",
        "imbalance": float(imbalance),
        "imbalance_ratio": 1.0 / float(imbalance),
        "profile": profile,
        "subset_seed": int(subset_seed),
        "n_max": n_max,
        "requested_counts": counts,
        "train_counts": class_counts,
        "test_counts": test.class_counts(),
        "test_fraction": float(test_fraction),
        "capped": {classes[c]: {"asked": a, "available": h} for c, (a, h) in capped.items()},
        **val_info,
    }
    return DataBundle(train, test, class_counts, info, mean, std, augment="none", val=va)


#: what a run without a recipe trains: these digits, in seconds (``ncollapse train`` alone)
DIGITS_RECIPE: dict[str, Any] = {
    "data": {"imbalance": 0.05},
    "model": {"backbone": "digits_cnn"},
    "optim": {
        "epochs": 30,
        "batch_size": 64,
        "warmup_epochs": 2,
        "milestones": [24, 28],
        "weight_decay": 5e-4,
        "mixup_alpha": 0.0,
    },
}


@register_dataset(
    "digits",
    options={
        "data.test_fraction": option(
            0.3,
            "share of each class held out (balanced) for test",
            range=(0, 1, "()"),
        )
    },
    default=True,
    recipe=DIGITS_RECIPE,
    imbalance=0.05,
)
def load_digits_data(cfg: Any) -> DataBundle:
    """``data.name: digits`` (scikit-learn's 8x8 digits, no files needed)."""
    return load_digits_lt(
        imbalance=cfg.imbalance,
        profile=cfg.profile,
        subset_seed=cfg.subset_seed,
        test_fraction=getattr(cfg, "test_fraction", 0.3),
        val=getattr(cfg, "val", "none"),
        val_per_class=getattr(cfg, "val_per_class", 1000),
        val_seed=getattr(cfg, "val_seed", 0),
    )
