"""Cross-entropy vs dot-regression under the fixed ETF: iterations and convergence rates.

Yang et al. (2022, Theorem 2) argue that with the classifier fixed to a simplex ETF, the
dot-regression (DR) loss reaches the collapsed optimum faster than cross-entropy (CE).
:func:`converge` measures it on the unconstrained feature model: per-class unit-norm features,
plain gradient descent on the sphere (:func:`~ncollapse.ufm.descent.sphere_gradient_descent`),
the same random start for both losses, progress measured by NC3 (alignment of the class means
with the ETF rows).

Two protocols:

- ``same-step`` (default): every step size of the grid is run with *both* losses; each run
  reports the iterations to NC3 < ``nc3_tol`` and its convergence rate (the per-iteration
  factor by which NC3 shrinks over the second half of the run; 1 means sublinear). Either
  loss can come out ahead, step by step.
- ``best-step``: each loss gets its own best step from the grid (fewest iterations). With
  projected steps DR's update is a convex combination of h and its vertex, so a large enough
  step reaches the vertex in one iteration whatever the data: this protocol cannot show CE
  ahead and is kept only to reproduce earlier figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from .descent import sphere_gradient_descent
from .problem import MAX_CLASSES, MAX_DIM, check_positive, long_tail_profile

__all__ = ["BEST_STEP_GRID", "DEFAULT_STEPS", "PROTOCOLS", "converge", "convergence_rate"]

#: step sizes of the same-step protocol (each run with both losses)
DEFAULT_STEPS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
#: the grid of the best-step protocol: 1 .. 1e6 in half decades
BEST_STEP_GRID = tuple(float(10 ** (e / 2)) for e in range(0, 13))
PROTOCOLS = ("same-step", "best-step")
#: longest run of one loss at one step
MAX_ITER = 10**6


def convergence_rate(trace: Sequence[float]) -> float | None:
    """Per-iteration factor by which NC3 shrinks over the second half of ``trace`` (NC3 before
    the first and after every iteration): ``(nc3_T / nc3_{T/2})^(1/(T - T/2))``. Below 1:
    linear convergence at that factor; close to 1: sublinear. ``None`` for fewer than two
    iterations or a non-positive value."""
    t = len(trace) - 1
    if t < 2:
        return None
    half = t // 2
    a, b = trace[half], trace[t]
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        return None
    return (b / a) ** (1.0 / (t - half))


def check_converge_args(
    num_classes, ratio, dim, nc3_tol, steps, max_iter, n_max, seed, param, protocol
) -> tuple[list[int], int, list[float]]:
    """Check every argument of :func:`converge` before any work: (counts, dim, steps)."""
    k = check_positive("number of classes (--k)", num_classes, upper=MAX_CLASSES, integer=True)
    if k < 2:
        raise UserError(f"the number of classes must be >= 2, got {num_classes!r}")
    counts = long_tail_profile(k, ratio, n_max)
    dim = k if dim is None else check_positive("dim", dim, upper=MAX_DIM, integer=True)
    if dim < k - 1:
        raise UserError(
            f"an ETF classifier of {k} classes needs dim >= K-1 = {k - 1}, got dim={dim}"
        )
    nc3_tol = check_positive("nc3 tolerance", nc3_tol, upper=1.0)
    steps = [check_positive("every step size", s_) for s_ in steps]
    if not steps or len(steps) > 50:
        raise UserError(f"give 1 to 50 step sizes, got {len(steps)}")
    check_positive("max_iter", max_iter, upper=MAX_ITER, integer=True)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise UserError(f"seed must be an integer in [0, 2^31), got {seed!r}")
    if param not in ("projected", "normalised"):
        raise UserError(f"unknown parametrisation {param!r}: valid: projected, normalised")
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: valid: {', '.join(PROTOCOLS)}")
    return counts, dim, steps


def converge(
    num_classes: int,
    ratio: float = 1.0,
    dim: int | None = None,
    nc3_tol: float = 1e-3,
    steps: Sequence[float] | None = None,
    max_iter: int = 20000,
    n_max: int = 500,
    seed: int = 0,
    param: str = "projected",
    protocol: str = "same-step",
) -> dict[str, Any]:
    """Iterations (and rates) of DR and CE under the fixed ETF to reach NC3 < ``nc3_tol``.

    ``ratio``: imbalance ratio n_max / n_min >= 1 of the exponential profile
    ``n_k = int(n_max * ratio^(-k/(K-1)))``. ``param``: ``projected`` (h <- normalise(h - step
    g)) or ``normalised`` (h = u/||u||, gradient descent on u through the normalisation). See
    the module docstring for the two ``protocol`` values. ``steps`` defaults to
    :data:`DEFAULT_STEPS` (same-step) or :data:`BEST_STEP_GRID` (best-step).
    """
    if steps is None:
        steps = DEFAULT_STEPS if protocol == "same-step" else BEST_STEP_GRID
    counts, dim, steps = check_converge_args(
        num_classes, ratio, dim, nc3_tol, steps, max_iter, n_max, seed, param, protocol
    )
    out: dict[str, Any] = {
        "num_classes": int(num_classes), "ratio": float(ratio), "dim": dim, "nc3_tol": nc3_tol,
        "counts": counts, "param": param, "protocol": protocol, "steps": steps,
        "max_iter": int(max_iter),
    }  # fmt: skip
    if protocol == "best-step":
        return _best_step(out, counts, dim, nc3_tol, steps, int(max_iter), seed, param)
    runs = []
    for step in steps:
        row: dict[str, Any] = {"step": step}
        for loss in ("dr", "ce"):
            r = sphere_gradient_descent(
                counts, dim, loss, step, nc3_tol, max_iter=int(max_iter), seed=seed,
                param=param, trace=True,
            )  # fmt: skip
            row[loss] = {
                "iterations": r["iterations"],
                "nc3": r["nc3"],
                "rate": convergence_rate(r.pop("trace")),
                "seconds": r["seconds"],
            }
        dr_it, ce_it = row["dr"]["iterations"], row["ce"]["iterations"]
        if dr_it is None and ce_it is None:
            row["fewer_iterations"] = None
        elif ce_it is None or (dr_it is not None and dr_it < ce_it):
            row["fewer_iterations"] = "dr"
        elif dr_it is None or ce_it < dr_it:
            row["fewer_iterations"] = "ce"
        else:
            row["fewer_iterations"] = "tie"
        runs.append(row)
    out["runs"] = runs
    out["dr_fewer"] = sum(r["fewer_iterations"] == "dr" for r in runs)
    out["ce_fewer"] = sum(r["fewer_iterations"] == "ce" for r in runs)
    return out


def _best_step(out, counts, dim, nc3_tol, steps, max_iter, seed, param) -> dict[str, Any]:
    for loss in ("dr", "ce"):
        best: dict[str, Any] | None = None
        tried = []
        for step in sorted(steps, reverse=True):  # large steps first: cheap, and they prune
            limit = max_iter if best is None else best["iterations"]
            if limit == 0:
                break
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
