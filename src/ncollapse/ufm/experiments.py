"""The UFM experiments behind ``ncollapse ufm threshold | converge | phase`` (SPEC section 7)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .problem import long_tail_profile, minority_index, minority_spread, two_group_counts
from .solvers import factor_convex, solve_convex, sphere_gradient_descent

__all__ = [
    "DEFAULT_STEPS",
    "converge",
    "minority_collapse_state",
    "phase_diagram",
    "theoretical_threshold",
    "threshold",
]

#: step sizes tried by :func:`converge` (the same grid for DR and CE)
DEFAULT_STEPS = tuple(float(10 ** (e / 2)) for e in range(0, 13))  # 1 .. 1e6


def _check_two_group(k_a: int, n_a: int, k_b: int, n_b: int) -> list[int]:
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
    counts: Sequence[int], lam: float, tail: Sequence[int], bias: bool = False
) -> dict[str, Any]:
    """Convex solve at ``lam``: spread of the tail logit columns, minority indices of W and H."""
    res = solve_convex(list(counts), lam, bias=bias, max_iter=50000)
    spread = minority_spread(res["Z"], tail)
    w, h = factor_convex(res["Y"], list(counts), 1.0, 1.0, len(counts))
    means = h.T - h.T.mean(axis=0)
    tail_norm = float(np.linalg.norm(means[list(tail)]))
    return {
        "lam": lam,
        "spread": spread,
        "minority_collapse_w": minority_index(w, tail) if np.linalg.norm(w) > 0 else None,
        # Z = 0 (everything collapsed) counts as collapsed: index 1
        "minority_collapse_means": minority_index(means, tail) if tail_norm > 1e-12 else 1.0,
        "iterations": res["iterations"],
        "converged": res["converged"],
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
    mean of the final bracket.
    """
    counts = _check_two_group(k_a, n_a, k_b, n_b)
    t0 = time.perf_counter()
    n_total = sum(counts)
    tail = list(range(k_a, k_a + k_b))
    solves = 0

    def collapsed(lam: float) -> tuple[bool, dict]:
        nonlocal solves
        solves += 1
        st = minority_collapse_state(counts, lam, tail, bias)
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


def converge(
    num_classes: int,
    imbalance: float = 1.0,
    dim: int | None = None,
    nc3_tol: float = 1e-3,
    steps: Sequence[float] = DEFAULT_STEPS,
    max_iter: int = 20000,
    n_max: int = 500,
    seed: int = 0,
    param: str = "projected",
) -> dict[str, Any]:
    """Iterations (and wall time) of DR and CE under the fixed ETF to reach NC3 < ``nc3_tol``.

    Gradient descent on unit-norm per-class features (``param``: ``projected`` or
    ``normalised``, see :func:`~ncollapse.ufm.solvers.sphere_gradient_descent`), the same
    random start for both losses; each loss gets its best step size from the same grid
    ``steps`` (a run is abandoned once it needs more iterations than the best so far; among
    steps with the fewest iterations the smallest is reported).
    Counts: ``n_k = n_max * imbalance^(-k/(K-1))``.
    """
    counts = long_tail_profile(int(num_classes), float(imbalance), n_max)
    dim = int(num_classes) if dim is None else int(dim)
    if dim < num_classes - 1:
        raise UserError(
            f"an ETF classifier of {num_classes} classes needs dim >= K-1 = {num_classes - 1}, "
            f"got dim={dim}"
        )
    if not (nc3_tol > 0):
        raise UserError(f"nc3 tolerance must be > 0, got {nc3_tol!r}")
    out: dict[str, Any] = {
        "num_classes": int(num_classes), "imbalance": float(imbalance), "dim": dim,
        "nc3_tol": nc3_tol, "counts": counts, "param": param,
        "steps": [float(v) for v in steps],
    }  # fmt: skip
    for loss in ("dr", "ce"):
        best: dict[str, Any] | None = None
        tried = []
        for step in sorted(steps, reverse=True):  # large steps first: cheap, and they prune
            limit = max_iter if best is None else best["iterations"]
            r = sphere_gradient_descent(
                counts, dim, loss, float(step), nc3_tol, max_iter=limit, seed=seed, param=param
            )
            tried.append({"step": float(step), "iterations": r["iterations"]})
            # ties go to the smaller step (steps are visited largest first)
            if r["iterations"] is not None and (
                best is None or r["iterations"] <= best["iterations"]
            ):
                best = {"step": float(step), **r}
        out[loss] = best or {"step": None, "iterations": None, "seconds": None, "nc3": None}
        out[loss]["tried"] = tried
    dr_it, ce_it = out["dr"]["iterations"], out["ce"]["iterations"]
    out["ratio_ce_over_dr"] = (ce_it / dr_it) if dr_it and ce_it else None
    return out


def phase_diagram(
    k_a: int = 5,
    k_b: int = 5,
    n_b: int = 100,
    ratios: Sequence[float] | None = None,
    lams: Sequence[float] | None = None,
    bias: bool = False,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Minority-collapse index over a grid of lam x n_A/n_B (learnable CE, convex form).

    The plotted index is that of the class features h_k (equivalently of the logit columns
    z_k = W h_k, the object that collapses); the W index is returned too but is noisy past
    the threshold, where the minority classifier rows shrink towards zero.

    Writes a PNG to ``out`` (when given) with the theoretical boundary
    ``lam = sqrt(n_B) / (K_A r n_B + K_B n_B)`` drawn over the grid.
    """
    t0 = time.perf_counter()
    if ratios is None:
        ratios = np.geomspace(1.25, 50, 17)
    if lams is None:
        lams = np.geomspace(1e-4, 3e-2, 33)
    ratios = [float(r) for r in ratios]
    lams = [float(v) for v in lams]
    if any(r <= 1 for r in ratios):
        raise UserError("every n_A/n_B ratio must be > 1 (n_B < n_A)")
    if any(v <= 0 for v in lams):
        raise UserError("every lam must be > 0")
    tail = list(range(k_a, k_a + k_b))
    index = np.full((len(ratios), len(lams)), np.nan)
    index_w = np.full_like(index, np.nan)
    spread = np.full_like(index, np.nan)
    for i, r in enumerate(ratios):
        n_a = max(n_b + 1, round(r * n_b))
        counts = _check_two_group(k_a, n_a, k_b, n_b)
        for j, lam in enumerate(lams):
            st = minority_collapse_state(counts, lam, tail, bias)
            spread[i, j] = st["spread"]
            index[i, j] = st["minority_collapse_means"]
            if st["minority_collapse_w"] is not None:
                index_w[i, j] = st["minority_collapse_w"]
    boundary = [math.sqrt(n_b) / (k_a * r * n_b + k_b * n_b) for r in ratios]
    result = {
        "ka": k_a, "kb": k_b, "nb": n_b, "bias": bias, "ratios": ratios, "lams": lams,
        "minority_collapse_means": index.tolist(), "minority_collapse_w": index_w.tolist(),
        "minority_spread": spread.tolist(),
        "theory_boundary": boundary, "seconds": None, "png": None,
    }  # fmt: skip
    if out is not None:
        result["png"] = str(_plot_phase(result, Path(out)))
    result["seconds"] = time.perf_counter() - t0
    return result


def _plot_phase(res: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = np.asarray(res["lams"])
    ratios = np.asarray(res["ratios"])
    index = np.asarray(res["minority_collapse_means"], dtype=float)
    spread = np.asarray(res["minority_spread"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    mesh = ax.pcolormesh(lams, ratios, index, shading="nearest", cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, label="minority-collapse index of the class features (1 = collapsed)")
    collapsed = (spread < 1e-6).astype(float)
    ax.contour(lams, ratios, collapsed, levels=[0.5], colors="white", linewidths=1.0,
               linestyles="dotted")  # fmt: skip
    fine = np.geomspace(ratios.min(), ratios.max(), 200)
    theory = np.sqrt(res["nb"]) / (res["ka"] * fine * res["nb"] + res["kb"] * res["nb"])
    ax.plot(theory, fine, "r-", lw=2, label=r"theory $\lambda = \sqrt{n_B}/N$")
    ax.plot([], [], color="white", ls="dotted", label="measured: tail logits coincide")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lams.min(), lams.max())
    ax.set_xlabel(r"$\lambda = 2\sqrt{\lambda_W \lambda_H}$")
    ax.set_ylabel(r"$n_A / n_B$")
    ax.set_title(
        f"UFM minority collapse, learnable CE{' + bias' if res['bias'] else ''} "
        f"(K_A={res['ka']}, K_B={res['kb']}, n_B={res['nb']})"
    )
    ax.legend(loc="lower left", fontsize=8, facecolor="0.85")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
