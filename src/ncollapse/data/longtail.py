# ruff: noqa: NPY002  (the legacy global generator is the point: bit-exact with the official code)
"""Long-tailed subsets, bit-exact with the LDAM protocol (Cao et al., 2019), as the released code of Yang et al. draws them.

:func:`long_tail_counts` gives the per-class sizes of the exponential or step profile and
:func:`long_tail_indices` picks which images to keep: NumPy's *legacy global* generator is seeded
with the subset seed, each class's indices (in label order) are shuffled with it and the first
``n_c`` kept; the global generator is restored afterwards so the training seed is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import numpy as np

from ..errors import DataError

__all__ = [
    "PROFILES",
    "check_training_classes",
    "long_tail_counts",
    "long_tail_indices",
    "long_tail_subset",
]

PROFILES = ("exp", "step")


def _check_imbalance(imbalance: float) -> float:
    try:
        r = float(imbalance)
    except (TypeError, ValueError):
        raise DataError(
            f"imbalance factor must be a number in (0, 1] (imbalance ratio = 1/r), got {imbalance!r}"
        ) from None
    if not (0.0 < r <= 1.0) or np.isnan(r):
        raise DataError(
            f"imbalance factor must be in (0, 1] (r = 0.01 is imbalance ratio 100; 1 is balanced), "
            f"got {imbalance!r}"
        )
    return r


def long_tail_counts(
    n_max: int, num_classes: int, imbalance: float, profile: str = "exp"
) -> list[int]:
    """Per-class training counts of a long-tailed profile, class 0 being the largest.

    ``exp``: ``n_i = int(n_max * r ** (i / (K - 1)))``; ``step``: the first ``K // 2`` classes keep
    ``n_max``, the rest get ``int(n_max * r)``. Computed with the same float expression as the
    official code, so CIFAR-10 at r = 0.01 gives 5000, 2997, ..., 50 (12,406 images).
    """
    r = _check_imbalance(imbalance)
    if int(n_max) != n_max or n_max < 1:
        raise DataError(
            f"n_max (images per class of the balanced set) must be a positive integer, got {n_max!r}"
        )
    if int(num_classes) != num_classes or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    n_max, k = int(n_max), int(num_classes)
    if profile == "exp":
        if k == 1:
            return [n_max]
        return [int(n_max * (r ** (i / (k - 1.0)))) for i in range(k)]
    if profile == "step":
        half = k // 2
        return [n_max] * half + [int(n_max * r)] * (k - half)
    raise DataError(f"unknown long-tail profile {profile!r}; valid: {', '.join(PROFILES)}")


def _names(classes: Sequence[str], idx: Sequence[int], most: int = 8) -> str:
    shown = ", ".join(str(classes[i]) for i in idx[:most])
    return shown + (f" and {len(idx) - most} more" if len(idx) > most else "")


def _counts_text(counts: Sequence[int], most: int = 12) -> str:
    c = [int(n) for n in counts]
    if len(c) <= most:
        return str(c)
    return f"[{', '.join(map(str, c[: most - 2]))}, ..., {c[-2]}, {c[-1]}] ({len(c)} classes)"


def _least_factor(n_max: int) -> float:
    """The smallest factor with two significant digits that leaves the last class of a profile
    starting at ``n_max`` one image (``int(n_max * r) >= 1``)."""
    r = 1.0 / n_max
    digits = 1 - int(np.floor(np.log10(r)))
    r = float(np.ceil(r * 10**digits) / 10**digits)
    while int(n_max * r) < 1:
        r = float(np.nextafter(r, 2.0))
    return r


def check_training_classes(
    counts: Sequence[int],
    classes: Sequence[str],
    *,
    name: str = "the training set",
    imbalance: float | None = None,
    n_max: int | None = None,
    hint: str = "",
) -> None:
    """Refuse training counts in which a class has no image, or fewer than two classes have
    any: such a class would be trained and scored without a single training image (its
    accuracy counted among the "few" classes) and the collapse metrics need two classes. The
    :class:`DataError` names the empty classes, the counts and the fix: with a long-tail
    profile (``imbalance``, ``n_max``), the smallest factor that keeps an image in every class."""
    empty = [c for c, n in enumerate(counts) if int(n) <= 0]
    if not empty:
        return
    held = len(counts) - len(empty)
    what = (
        f"{name} has {'images of one class only' if held == 1 else 'no image at all'}"
        if held < 2
        else f"{name} has no image of class{'es' if len(empty) > 1 else ''} "
        f"{_names(classes, empty)} (of {len(counts)})"
    )
    fix = hint or "every class needs at least one training image"
    if imbalance is not None and n_max is not None and n_max >= 1 and float(imbalance) < 1.0:
        least = _least_factor(int(n_max))
        fix = (
            f"raise data.imbalance (now {imbalance:g}) to at least {least:g}, which keeps one "
            f"image in each class (the largest keeps {n_max})"
            if least <= 1.0
            else f"the largest class keeps only {n_max} image(s): every class needs one"
        ) + (f"; {hint}" if hint else "")
    raise DataError(
        f"{what}: train counts {_counts_text(counts)}; a class without training images would "
        f"be trained and scored all the same: {fix}"
    )


def long_tail_subset(
    labels: np.ndarray | Sequence[int], counts: Sequence[int], seed: int = 0
) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Indices of the long-tailed subset and the classes that had to be capped.

    Returns ``(indices, capped)`` where ``capped`` maps a class index to ``(asked, available)`` for
    every class that has fewer images than ``counts`` asks for (it keeps all it has). Classes are
    visited in label order ``0 .. len(counts) - 1``; the indices are concatenated in that order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
    for c, n in enumerate(counts):
        if int(n) != n or n < 0:
            raise DataError(f"count for class {c} must be a non-negative integer, got {n!r}")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        parts: list[np.ndarray] = []
        capped: dict[int, tuple[int, int]] = {}
        for c, n in enumerate(counts):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            if int(n) > len(idx):
                capped[c] = (int(n), len(idx))
            parts.append(idx[: int(n)])
    finally:
        np.random.set_state(state)
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return out.astype(np.int64, copy=False), capped


@overload
def long_tail_indices(
    labels: np.ndarray | Sequence[int],
    counts: Sequence[int],
    seed: int = ...,
    *,
    return_capped: Literal[False] = ...,
) -> np.ndarray: ...
@overload
def long_tail_indices(
    labels: np.ndarray | Sequence[int],
    counts: Sequence[int],
    seed: int = ...,
    *,
    return_capped: Literal[True],
) -> tuple[np.ndarray, dict[int, tuple[int, int]]]: ...
def long_tail_indices(labels, counts, seed=0, *, return_capped=False):
    """Indices (int64) of the long-tailed subset, bit-exact with the LDAM standard.

    Never asks for more than exists: a class with fewer images than ``counts[c]`` keeps all it
    has. Pass ``return_capped=True`` to also get ``{class: (asked, available)}`` (see
    :func:`long_tail_subset`); the loaders record it in ``DataBundle.info`` and warn.
    """
    idx, capped = long_tail_subset(labels, counts, seed)
    return (idx, capped) if return_capped else idx
