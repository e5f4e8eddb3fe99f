"""From a reader's full arrays to a :class:`DataBundle`: long-tail subset, validation split,
image size, normalisation statistics and provenance (shared by every array-format reader)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset, DataBundle
from .digits import cap_warning, channel_stats
from .longtail import check_training_classes, long_tail_counts, long_tail_subset
from .resize import check_size, resize_array
from .split import validation_split

__all__ = ["build_lt_bundle"]


def _dataset(x: np.ndarray, y: np.ndarray, classes: list[str], size: int | None) -> ArrayDataset:
    x = resize_array(x, size)
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes)


def build_lt_bundle(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: list[str],
    cfg: Any,
    info: dict[str, Any],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    augment: str,
    n_max: int | None = None,
) -> DataBundle:
    """Long-tail the training arrays and wrap everything up.

    ``cfg.imbalance`` None keeps every training image as given (a user's own data);
    otherwise ``n_max`` (images of class 0 in the profile) defaults to the largest class, and
    counts above what a class has are capped, recorded in ``info["capped"]`` and warned about
    (except at r = 1, where every class keeps what it has by definition). With
    ``data.val: unused`` the validation set is drawn from the training images the subset left
    unused (:func:`~ncollapse.data.split.validation_split`). ``data.size`` fits the kept images
    to ``size x size`` (:mod:`ncollapse.data.resize`); ``mean``/``std`` None: computed from the
    training subset.
    """
    x, y = train
    k = len(classes)
    if k < 2:
        raise DataError(
            f"{name}: {k} class{'es' if k != 1 else ''} found ({', '.join(map(str, classes)) or 'none'}); "
            "a classifier needs at least two classes"
        )
    per_class = np.bincount(y, minlength=k)
    if n_max is None:
        n_max = int(per_class.max())
    as_given = cfg.imbalance is None
    if as_given:  # your own data: every image, in the reader's order
        counts, idx, capped = None, np.arange(len(y), dtype=np.int64), {}
    else:
        counts = long_tail_counts(n_max, k, cfg.imbalance, cfg.profile)
        check_training_classes(
            counts, classes, name=f"the {name} training set", imbalance=cfg.imbalance, n_max=n_max
        )
        idx, capped = long_tail_subset(y, counts, cfg.subset_seed)
        if float(cfg.imbalance) < 1.0:  # at r = 1 every class keeps what it has: nothing to say
            cap_warning(name, capped, classes)
    val_idx, val_info = validation_split(name, y, idx, classes, cfg)
    size = check_size(getattr(cfg, "size", None))
    tr = _dataset(x[idx], y[idx], classes, size)
    te = _dataset(test[0], test[1], classes, size)
    va = None if val_idx is None else _dataset(x[val_idx], y[val_idx], classes, size)
    if mean is None or std is None:
        mean, std = channel_stats(tr.images)
    class_counts = tr.class_counts()
    subset: dict[str, Any] = (
        {"subset": "none: every training image, as given"}
        if as_given
        else {
            "subset": "long-tail",
            "imbalance": float(cfg.imbalance),
            "imbalance_ratio": 1.0 / float(cfg.imbalance),
            "profile": cfg.profile,
            "subset_seed": int(cfg.subset_seed),
        }
    )
    info = {
        "name": name,
        **info,
        **subset,
        "n_max": int(n_max),
        "requested_counts": counts,
        "train_counts": class_counts,
        "test_counts": te.class_counts(),
        "full_train_counts": per_class.tolist(),
        "capped": {classes[c]: {"asked": a, "available": h} for c, (a, h) in capped.items()},
        "image_size": list(tr.images.shape[1:]),
        **val_info,
    }
    if size is not None:
        info["size"] = size
    return DataBundle(tr, te, class_counts, info, tuple(mean), tuple(std), augment, va)
