"""The UFM problem: class counts, checks of user input and the size limits of the simulator.

Counts are given per class (``'500x5,100x5'``: five classes of 500, five of 100). Throughout
the UFM commands and functions, ``ratio`` is the imbalance *ratio* n_max / n_min >= 1
(100 means the largest class has 100 times the samples of the smallest); the rest of the
package speaks of the imbalance *factor* r = 1 / ratio in (0, 1].

The metric helpers re-exported here (:func:`nc3`, :func:`minority_index`,
:func:`default_tail`) are those of :mod:`ncollapse.metrics`, under their former names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from ..metrics import default_tail_classes, minority_collapse_index, nc3_distance

__all__ = [
    "COUNTS_FORM",
    "MAX_CLASSES",
    "MAX_COUNT",
    "MAX_DIM",
    "MAX_SAMPLE_COLUMNS",
    "MAX_VARIABLES",
    "check_positive",
    "check_ratio",
    "default_tail",
    "long_tail_profile",
    "minority_index",
    "minority_spread",
    "nc3",
    "parse_counts",
    "two_group_counts",
    "validate_counts",
    "validate_reg",
]

#: most classes a UFM may have: the solvers take an SVD or an L-BFGS step over K x K / K x d
#: matrices per iteration; K = 100 solves in seconds, K = 1000 would take many minutes
MAX_CLASSES = 200
#: largest feature dimension (a solution needs d >= K; more only adds null directions)
MAX_DIM = 4096
#: most optimisation variables (W, H and b together) of one factored solve
MAX_VARIABLES = 500_000
#: most feature columns of a per-sample solve (N, the number of samples)
MAX_SAMPLE_COLUMNS = 10_000
#: largest class count (beyond it float64 sums lose the count's last digits)
MAX_COUNT = 10**12

COUNTS_FORM = (
    "class counts are positive integers, as a list or a string like '500x5,100x5' "
    "(count x number of classes) or '500,500,100'"
)

_ITEM = re.compile(r"^\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*$")


def parse_counts(text: str | Sequence[int]) -> list[int]:
    """Parse ``'500x5,100x5'`` (or ``'500,500,100'``, or a list) into per-class counts."""
    if not isinstance(text, str):
        return validate_counts(text)
    items: list[tuple[int, int]] = []
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise UserError(f"bad class counts {text!r}: {COUNTS_FORM}")
        n = int(m.group(1))
        reps = int(m.group(2)) if m.group(2) is not None else 1
        if n <= 0 or reps <= 0:
            raise UserError(f"bad class counts {text!r}: {COUNTS_FORM}")
        items.append((n, reps))
    total = sum(reps for _, reps in items)  # checked before any list of that size is built
    if total > MAX_CLASSES:
        raise UserError(
            f"class counts {text!r} give K = {total} classes; the UFM simulator handles at most "
            f"K = {MAX_CLASSES} (solve time grows like K^3)"
        )
    return validate_counts([n for n, reps in items for _ in range(reps)])


def validate_counts(counts: Sequence) -> list[int]:
    """Check ``counts`` are 2..MAX_CLASSES positive integers; return them as a list of ints."""
    if len(counts) > MAX_CLASSES:
        raise UserError(
            f"{len(counts)} classes: the UFM simulator handles at most K = {MAX_CLASSES} classes"
        )
    out = []
    for c in counts:
        try:
            ok = not isinstance(c, bool) and float(c).is_integer() and int(c) > 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise UserError(f"bad class count {c!r}: {COUNTS_FORM}")
        if int(c) > MAX_COUNT:
            raise UserError(f"class count {int(c)} is above the limit {MAX_COUNT:.0e}")
        out.append(int(c))
    if len(out) < 2:
        raise UserError(f"the UFM needs at least 2 classes, got {len(out)}: {COUNTS_FORM}")
    return out


def validate_reg(**values: float | None) -> None:
    """Regularisation weights must be finite and >= 0."""
    for name, v in values.items():
        if v is None:
            continue
        if not math.isfinite(float(v)) or float(v) < 0:
            raise UserError(
                f"{name} must be a non-negative number (a regularisation weight), got {v!r}"
            )


def check_positive(name: str, value, upper: float | None = None, integer: bool = False):
    """``value`` must be a finite number > 0 (and <= ``upper``; an integer if asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0 or (integer and not v.is_integer()):
        kind = "a positive integer" if integer else "a positive finite number"
        raise UserError(f"{name} must be {kind}, got {value!r}")
    if upper is not None and v > upper:
        raise UserError(f"{name} = {value!r} is above the limit {upper:g}")
    return int(v) if integer else v


def check_ratio(ratio, n_max: int | None = None) -> float:
    """An imbalance ratio n_max / n_min: a finite number >= 1 (and <= n_max, so that the
    smallest class keeps a sample)."""
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise UserError(f"ratio must be a number >= 1 (n_max / n_min), got {ratio!r}") from None
    if not math.isfinite(r) or r < 1:
        raise UserError(
            f"ratio must be a number >= 1 (n_max / n_min, e.g. 100), got {ratio!r}; an "
            f"imbalance factor r in (0, 1] is ratio 1/r"
        )
    if n_max is not None and r > n_max:
        raise UserError(f"ratio {r:g} leaves the smallest class empty with n_max = {n_max}")
    return r


def two_group_counts(k_a: int, n_a: int, k_b: int, n_b: int) -> list[int]:
    """Counts of the two-group setting: K_A classes of n_A samples, then K_B classes of n_B."""
    for name, v in (("ka", k_a), ("na", n_a), ("kb", k_b), ("nb", n_b)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) <= 0:
            raise UserError(f"{name} must be a positive integer, got {v!r}")
    if int(k_a) + int(k_b) < 2:
        raise UserError("the two-group setting needs K_A + K_B >= 2 classes")
    if int(k_a) + int(k_b) > MAX_CLASSES:
        raise UserError(
            f"K_A + K_B = {int(k_a) + int(k_b)} classes; the UFM simulator handles at most "
            f"{MAX_CLASSES}"
        )
    return validate_counts([int(n_a)] * int(k_a) + [int(n_b)] * int(k_b))


def long_tail_profile(num_classes: int, ratio: float, n_max: int = 500) -> list[int]:
    """Exponential long-tail counts ``n_k = int(n_max * ratio^(-k/(K-1)))``, k = 0..K-1.

    The package's long-tail profile (:func:`ncollapse.data.longtail.long_tail_counts`) with
    imbalance factor 1/ratio: the same rounding down as the CIFAR-LT subsets.
    """
    from ..data.longtail import long_tail_counts

    k = check_positive("number of classes", num_classes, upper=MAX_CLASSES, integer=True)
    if k < 2:
        raise UserError(f"need at least 2 classes, got {num_classes}")
    n_max = check_positive("n_max", n_max, upper=MAX_COUNT, integer=True)
    r = check_ratio(ratio, n_max)
    return validate_counts(long_tail_counts(n_max, k, 1.0 / r))


def default_tail(counts: Sequence[int]) -> list[int]:
    """Tail set T of the minority-collapse index: :func:`ncollapse.metrics.default_tail_classes`."""
    return default_tail_classes(counts)


def nc3(w: np.ndarray, means: np.ndarray) -> float:
    """NC3 self-duality of (K, d) classifier rows and class means:
    :func:`ncollapse.metrics.nc3_distance`."""
    return nc3_distance(w, means)


def minority_index(vecs: np.ndarray, tail: Sequence[int]) -> float | None:
    """Minority-collapse index of the rows ``vecs[tail]``:
    :func:`ncollapse.metrics.minority_collapse_index`."""
    return minority_collapse_index(vecs, tail)


def minority_spread(z: np.ndarray, tail: Sequence[int]) -> float:
    """Largest distance between two tail logit columns of ``z`` (K x K), relative to ||Z||_F.

    0 exactly when the tail classes' logit columns coincide (minority collapse in the
    nuclear-norm form).
    """
    cols = z[:, list(tail)]
    diffs = cols[:, :, None] - cols[:, None, :]
    spread = float(np.sqrt((diffs**2).sum(axis=0)).max())
    return spread / max(float(np.linalg.norm(z)), 1e-300)
