"""Problem description of the unconstrained feature model (SPEC section 7): class counts,
validation of user input, and the small measurement helpers shared by the solvers.

Everything here is float64 numpy; the solvers hand their results to
:func:`ncollapse.metrics.collapse_metrics` when that module is available.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..errors import UserError

__all__ = [
    "COUNTS_FORM",
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

COUNTS_FORM = (
    "class counts are positive integers, as a list or a string like '500x5,100x5' "
    "(count x number of classes) or '500,500,100'"
)

_ITEM = re.compile(r"^\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*$")


def parse_counts(text: str | Sequence[int]) -> list[int]:
    """Parse ``'500x5,100x5'`` (or ``'500,500,100'``, or a list) into per-class counts."""
    if not isinstance(text, str):
        return validate_counts(text)
    counts: list[int] = []
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise UserError(f"bad class counts {text!r}: {COUNTS_FORM}")
        n = int(m.group(1))
        reps = int(m.group(2)) if m.group(2) is not None else 1
        if n <= 0 or reps <= 0:
            raise UserError(f"bad class counts {text!r}: {COUNTS_FORM}")
        counts.extend([n] * reps)
    return validate_counts(counts)


def validate_counts(counts: Sequence) -> list[int]:
    """Check ``counts`` are at least two positive integers; return them as a list of ints."""
    out = []
    for c in counts:
        if isinstance(c, bool) or not float(c).is_integer() or int(c) <= 0:
            raise UserError(f"bad class count {c!r}: {COUNTS_FORM}")
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


def two_group_counts(k_a: int, n_a: int, k_b: int, n_b: int) -> list[int]:
    """Counts of the two-group setting: K_A classes of n_A samples, then K_B classes of n_B."""
    for name, v in (("ka", k_a), ("na", n_a), ("kb", k_b), ("nb", n_b)):
        if isinstance(v, bool) or int(v) != v or int(v) <= 0:
            raise UserError(f"{name} must be a positive integer, got {v!r}")
    if int(k_a) + int(k_b) < 2:
        raise UserError("the two-group setting needs K_A + K_B >= 2 classes")
    return [int(n_a)] * int(k_a) + [int(n_b)] * int(k_b)


def long_tail_profile(num_classes: int, imbalance: float, n_max: int = 500) -> list[int]:
    """Exponential long-tail profile ``n_k = round(n_max * imbalance^(-k/(K-1)))`` (k = 0..K-1)."""
    if num_classes < 2:
        raise UserError(f"need at least 2 classes, got {num_classes}")
    if not imbalance >= 1:
        raise UserError(f"imbalance must be >= 1 (n_max / n_min), got {imbalance!r}")
    k = np.arange(num_classes)
    counts = np.round(n_max * float(imbalance) ** (-k / (num_classes - 1))).astype(int)
    return [max(1, int(c)) for c in counts]


def default_tail(counts: Sequence[int]) -> list[int]:
    """Tail set T for the minority-collapse index.

    Two distinct class sizes (the two-group setting): the smaller group. Otherwise the SPEC
    section 6 default: the few-shot classes (count < 20) if at least two, else the
    ``max(2, K // 3)`` smallest classes (ties to the larger index).
    """
    counts = [int(c) for c in counts]
    values = sorted(set(counts))
    if len(values) == 2 and counts.count(values[0]) >= 2:
        return [k for k, c in enumerate(counts) if c == values[0]]
    few = [k for k, c in enumerate(counts) if c < 20]
    if len(few) >= 2:
        return few
    size = max(2, len(counts) // 3)
    order = sorted(range(len(counts)), key=lambda k: (counts[k], -k))
    return sorted(order[:size])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-300)


def nc3(w: np.ndarray, means: np.ndarray) -> float:
    """SPEC NC3 self-duality ``|| W/||W||_F - Mc/||Mc||_F ||_F^2``.

    ``w``: (K, d) classifier rows; ``means``: (K, d) class means, centred here on the
    class-balanced mean (1/K) sum_k mu_k.
    """
    mc = means - means.mean(axis=0, keepdims=True)
    a = w / max(np.linalg.norm(w), 1e-300)
    b = mc / max(np.linalg.norm(mc), 1e-300)
    return float(np.sum((a - b) ** 2))


def minority_index(vecs: np.ndarray, tail: Sequence[int]) -> float | None:
    """SPEC minority-collapse index of the rows ``vecs[tail]``: 0 for an ETF, 1 if they coincide."""
    tail = list(tail)
    k = vecs.shape[0]
    if len(tail) < 2:
        return None
    u = _unit_rows(vecs[tail])
    g = u @ u.T
    iu = np.triu_indices(len(tail), 1)
    off = 1.0 / (k - 1)
    return float((g[iu].mean() + off) / (1.0 + off))


def minority_spread(z: np.ndarray, tail: Sequence[int]) -> float:
    """Largest distance between two tail logit columns of ``z`` (K x K), relative to ||Z||_F.

    0 exactly when the tail classes' logit columns coincide (minority collapse in the
    nuclear-norm form).
    """
    cols = z[:, list(tail)]
    diffs = cols[:, :, None] - cols[:, None, :]
    spread = float(np.sqrt((diffs**2).sum(axis=0)).max())
    return spread / max(float(np.linalg.norm(z)), 1e-300)
