"""A validation split that costs no training image: drawn from what the long-tail subset left over.

A long-tailed training set keeps only part of the balanced training set (CIFAR-10-LT at r = 0.01
keeps 12,406 of 50,000 images). ``data.val: unused`` holds out up to ``data.val_per_class`` of the
*unused* training images of each class as a validation set, so hyper-parameters are never chosen
on the test set. The draw uses its own generator (``data.val_seed``), never NumPy's global state,
and runs after the subset is chosen, so the training subset stays bit-exact with ``data.val: none``.

A class whose every training image is in the subset has no validation images: in the exponential
profile that is class 0 whenever it holds no more than ``n_max`` images (always on a balanced
source), and in the step profile the whole first half. Such classes are named in one warning and recorded
in ``info["val_counts"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError, did_you_mean

__all__ = ["VAL_MODES", "check_val_options", "unused_validation_indices", "validation_split"]

#: values of ``data.val``
VAL_MODES = ("none", "unused")


def check_val_options(cfg: Any) -> tuple[str, int, int]:
    """``(mode, per_class, seed)`` from a ``DataConfig``-like object (missing fields: defaults),
    with a :class:`DataError` for an unknown mode or a per-class count below 1."""
    mode = getattr(cfg, "val", "none")
    mode = "none" if mode is None else str(mode)
    if mode not in VAL_MODES:
        raise DataError(f"unknown data.val {mode!r}" + did_you_mean(mode, VAL_MODES))
    per_class = getattr(cfg, "val_per_class", 1000)
    seed = getattr(cfg, "val_seed", 0)
    if mode == "none":
        return mode, 0, 0
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise DataError(
            f"data.val_per_class must be an integer >= 1 (images held out per class), got {per_class!r}"
        )
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise DataError(f"data.val_seed must be a non-negative integer, got {seed!r}")
    return mode, int(per_class), int(seed)


def unused_validation_indices(
    labels: np.ndarray | Sequence[int],
    used: np.ndarray | Sequence[int],
    per_class: int,
    seed: int = 0,
    num_classes: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Indices (into ``labels``) of up to ``per_class`` images per class outside ``used``.

    Class ``c``'s candidates are its indices not in ``used``, in ascending order; they are
    permuted with ``numpy.random.default_rng([seed, c])`` and the first ``per_class`` kept (then
    sorted). Each class has its own stream, so a class's draw does not depend on the others, and
    a larger ``per_class`` gives a superset of a smaller one. Returns ``(indices, counts)`` with
    the indices grouped by class in label order and ``counts`` per class.
    """
    labels = np.asarray(labels)
    k = int(num_classes) if num_classes is not None else int(labels.max(initial=-1)) + 1
    free = np.ones(len(labels), dtype=bool)
    free[np.asarray(used, dtype=np.int64)] = False
    parts: list[np.ndarray] = []
    counts: list[int] = []
    for c in range(k):
        cand = np.flatnonzero(free & (labels == c))
        take = np.sort(cand[np.random.default_rng([seed, c]).permutation(len(cand))[:per_class]])
        parts.append(take)
        counts.append(len(take))
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return out.astype(np.int64, copy=False), counts


def validation_split(
    name: str,
    labels: np.ndarray,
    used: np.ndarray,
    classes: Sequence[str],
    cfg: Any,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The validation indices ``data.val`` asks for (None for ``none``) and what goes in
    ``DataBundle.info``: ``val`` (mode, per_class, seed) and ``val_counts`` (per class, or None).

    Warns once, in one line, naming the classes left without validation images.
    """
    mode, per_class, seed = check_val_options(cfg)
    if mode == "none":
        return None, {"val": {"mode": "none"}, "val_counts": None}
    idx, counts = unused_validation_indices(labels, used, per_class, seed, len(classes))
    empty = [classes[c] for c, n in enumerate(counts) if n == 0]
    if empty:
        warnings.warn(
            f"{name}: no validation images for class(es) {', '.join(empty)}: the long-tail "
            "subset uses all their training images (see info['val_counts'])",
            stacklevel=3,
        )
    info = {
        "val": {"mode": mode, "per_class": per_class, "seed": seed},
        "val_counts": counts,
        "val_missing": empty,
    }
    return idx, info
