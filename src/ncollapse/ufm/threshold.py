"""Minority collapse under learnable cross-entropy: the state at one lam and the measured
threshold (Fang et al., 2021; Hong & Ling, 2023: collapse exactly when lam >= sqrt(n_B) / N,
lam = 2 sqrt(lam_W lam_H))."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from .convex import factor_convex, solve_convex
from .problem import check_positive, minority_index, minority_spread, two_group_counts

__all__ = [
    "check_two_group",
    "minority_collapse_state",
    "theoretical_threshold",
    "threshold",
]

#: collapse tests and bracket moves of one threshold search, at most (each is a convex solve;
#: the default search needs about 15)
MAX_SOLVES = 200


def check_two_group(k_a: int, n_a: int, k_b: int, n_b: int) -> list[int]:
    """Counts of the two-group setting, checked for a minority-collapse experiment."""
    counts = two_group_counts(k_a, n_a, k_b, n_b)
    if n_b >= n_a:
        raise UserError(
            f"the minority-collapse threshold needs n_B < n_A (the B group is the minority), "
            f"got n_A={n_a}, n_B={n_b}: pass --na > --nb"
        )
    if k_b < 2:
        raise UserError(f"minority collapse needs K_B >= 2 minority classes, got kb={k_b}")
    return counts


def theoretical_threshold(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """sqrt(n_B) / N, N = K_A n_A + K_B n_B (lam = 2 sqrt(lam_W lam_H))."""
    return math.sqrt(n_b) / (k_a * n_a + k_b * n_b)


def minority_collapse_state(
    counts: Sequence[int],
    lam: float,
    tail: Sequence[int],
    bias: bool = False,
    max_iter: int = 50000,
) -> dict[str, Any]:
    """Convex solve at ``lam``: spread of the tail logit columns, minority indices of W and of
    the class features (``None`` when the solve did not settle within ``max_iter``)."""
    res = solve_convex(list(counts), lam, bias=bias, max_iter=max_iter)
    spread = minority_spread(res["Z"], tail)
    w, h = factor_convex(res["Y"], list(counts), 1.0, 1.0, len(counts))
    means = h.T - h.T.mean(axis=0)
    settled = bool(res["converged"])
    return {
        "lam": lam,
        "spread": spread if settled else None,
        # indices of vectors that coincide to working precision are 1 (see
        # ncollapse.metrics.minority_collapse_index): this covers Z = 0, everything collapsed
        "minority_collapse_w": minority_index(w, tail) if settled else None,
        "minority_collapse_means": minority_index(means, tail) if settled else None,
        "iterations": res["iterations"],
        "converged": settled,
    }


def threshold(
    k_a: int,
    n_a: int,
    k_b: int,
    n_b: int,
    bias: bool = False,
    rel_tol: float = 1e-3,
    spread_tol: float = 1e-6,
) -> dict[str, Any]:
    """Measured critical lam of minority collapse (learnable CE), by bisection on the convex form.

    "Collapsed" means the minority logit columns coincide: their largest distance is below
    ``spread_tol`` times ``||Z||_F``. The bracket is found by doubling/halving from 1/N, then
    bisected in log-space until ``hi/lo - 1 < rel_tol``; the measured threshold is the geometric
    mean of the final bracket. ``rel_tol`` must lie in [1e-12, 1) (below, the bracket cannot
    shrink any more in float64).
    """
    counts = check_two_group(k_a, n_a, k_b, n_b)
    rel_tol = check_positive("rel_tol", rel_tol, upper=0.999)
    if rel_tol < 1e-12:
        raise UserError(
            f"rel_tol must be >= 1e-12 (float64 cannot resolve a finer bracket), got {rel_tol:g}"
        )
    spread_tol = check_positive("spread_tol", spread_tol, upper=0.5)
    t0 = time.perf_counter()
    n_total = sum(counts)
    tail = list(range(k_a, k_a + k_b))
    solves = 0

    def collapsed(lam: float) -> tuple[bool, dict]:
        nonlocal solves
        solves += 1
        if solves > MAX_SOLVES:
            raise UserError(f"no threshold found within {MAX_SOLVES} convex solves")
        st = minority_collapse_state(counts, lam, tail, bias)
        if not st["converged"]:
            raise UserError(f"the convex solver did not settle at lam = {lam:.3g}")
        return st["spread"] < spread_tol, st

    lo = 1.0 / n_total
    ok, st_lo = collapsed(lo)
    while ok:
        lo /= 4
        ok, st_lo = collapsed(lo)
    hi = 2 * lo
    ok, st_hi = collapsed(hi)
    while not ok:
        lo, st_lo = hi, st_hi
        hi *= 2
        ok, st_hi = collapsed(hi)
    while hi / lo - 1 > rel_tol:
        mid = math.sqrt(lo * hi)
        if not lo < mid < hi:  # the bracket is as narrow as float64 allows
            break
        ok, st = collapsed(mid)
        if ok:
            hi, st_hi = mid, st
        else:
            lo, st_lo = mid, st
    measured = math.sqrt(lo * hi)
    theory = theoretical_threshold(k_a, n_a, k_b, n_b)
    return {
        "ka": k_a, "na": n_a, "kb": k_b, "nb": n_b, "N": n_total, "bias": bias,
        "measured": measured,
        "theory": theory,
        "relative_error": measured / theory - 1,
        "bracket": [lo, hi],
        "below": {"lam": lo, "spread": st_lo["spread"], "minority_collapse_w": st_lo["minority_collapse_w"]},
        "above": {"lam": hi, "spread": st_hi["spread"], "minority_collapse_w": st_hi["minority_collapse_w"]},
        "lam_definition": "lam = 2 sqrt(lam_W lam_H)",
        "solves": solves,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
