"""Front door of the UFM solvers: :func:`solve` picks a solver and attaches the metrics.

The solvers live in one module per family:

- :mod:`~ncollapse.ufm.factored`: L-BFGS on (W, H, b), any loss and classifier;
- :mod:`~ncollapse.ufm.convex`: learnable cross-entropy through its nuclear-norm form;
- :mod:`~ncollapse.ufm.descent`: plain gradient descent on the sphere under the fixed ETF
  (iteration counts of CE and DR).

Their public names are re-exported here for code that imports them from this module.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import UserError
from .common import etf_classifier
from .convex import factor_convex, solve_convex
from .descent import sphere_gradient_descent
from .factored import solve_factored
from .problem import (
    MAX_DIM,
    MAX_SAMPLE_COLUMNS,
    MAX_VARIABLES,
    check_positive,
    parse_counts,
    validate_reg,
)
from .solution import UFMSolution, collapse_report

__all__ = [
    "UFMSolution",
    "collapse_report",
    "etf_classifier",
    "factor_convex",
    "solve",
    "solve_convex",
    "solve_factored",
    "sphere_gradient_descent",
]


def solve(
    counts,
    dim: int | None = None,
    loss: str = "ce",
    classifier: str = "learnable",
    lam_w: float | None = None,
    lam_h: float | None = None,
    lam_b: float = 0.0,
    bias: bool = False,
    feature_norm: float | None = None,
    etf_scale: float = 1.0,
    method: str = "auto",
    per_sample: bool = False,
    tail: list[int] | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
) -> UFMSolution:
    """Solve one UFM and attach its neural-collapse metrics (``solution.metrics``).

    ``loss``: ``ce`` or ``dr``; ``classifier``: ``learnable`` or ``etf`` (W fixed to the
    simplex ETF times ``etf_scale``). ``dr`` needs ``etf`` and features on a sphere
    (``feature_norm``, default 1.0 for DR: with lam_H alone DR's optimum is h = 0).
    ``method``: ``factored`` (L-BFGS on W, H, b), ``convex`` (learnable CE with free
    features only: the nuclear-norm form with lam = 2 sqrt(lam_W lam_H), then factored back)
    or ``auto`` (convex where it applies, else factored).
    ``lam_w``/``lam_h`` default to ``0.25 sqrt(n_min)/N`` each, i.e. lam = half the
    minority-collapse scale sqrt(n_min)/N (the right scale for any N; a fixed value such as
    5e-4 collapses every logit to 0 once N is large).
    """
    t0 = time.perf_counter()
    counts = parse_counts(counts)
    settings = _settings(counts, dim, loss, classifier, lam_w, lam_h, lam_b, bias, feature_norm,
                         etf_scale, method, per_sample, tol, max_iter, seed)  # fmt: skip
    tail = _check_tail(tail, len(counts))
    dim, feature_norm = settings["dim"], settings["feature_norm"]
    lam_w, lam_h, k = settings["lam_w"], settings["lam_h"], len(counts)
    if method == "auto":
        convex_ok = loss == "ce" and classifier == "learnable" and feature_norm is None
        method = "convex" if convex_ok and not per_sample and dim >= k else "factored"
    if method == "convex":
        if loss != "ce" or classifier != "learnable" or feature_norm is not None or per_sample:
            raise UserError(
                "--method convex is the nuclear-norm form of learnable CE with free features: "
                "use --loss ce --classifier learnable (no feature norm)"
            )
        if dim < k:
            raise UserError(f"--method convex factors its solution back into dim >= K = {k}")
        res = solve_convex(
            counts, settings["lam"], bias=bias, lam_b=lam_b,
            tol=settings["tol"] or 1e-10, max_iter=settings["max_iter"] or 200000,
        )  # fmt: skip
        w, h = factor_convex(res["Y"], counts, lam_w, lam_h, dim)
        sol = UFMSolution(
            counts=counts, W=w, H=h, b=res["b"], objective=res["objective"], loss=res["loss"],
            iterations=res["iterations"], converged=res["converged"],
            grad_norm=res["grad_map_norm"], seconds=0.0, method="convex-fista",
        )  # fmt: skip
    else:
        sol = solve_factored(
            counts, dim, loss=loss, classifier=classifier, lam_w=lam_w, lam_h=lam_h,
            lam_b=lam_b, bias=bias, feature_norm=feature_norm, etf_scale=settings["etf_scale"],
            per_sample=per_sample, tol=settings["tol"] or 1e-7,
            max_iter=settings["max_iter"] or 20000, seed=seed,
        )  # fmt: skip
    sol.settings = {key: v for key, v in settings.items() if key not in ("tol", "max_iter")}
    sol.metrics = collapse_report(sol, tail)
    sol.seconds = time.perf_counter() - t0
    return sol


def _settings(counts, dim, loss, classifier, lam_w, lam_h, lam_b, bias, feature_norm, etf_scale,
              method, per_sample, tol, max_iter, seed) -> dict:  # fmt: skip
    """Check every argument of :func:`solve` before any work; the resolved settings."""
    k = len(counts)
    if loss not in ("ce", "dr"):
        raise UserError(f"unknown loss {loss!r}: valid: ce, dr")
    if classifier not in ("learnable", "etf"):
        raise UserError(f"unknown classifier {classifier!r}: valid: learnable, etf")
    if method not in ("factored", "convex", "auto"):
        raise UserError(f"unknown method {method!r}: valid: auto, factored, convex")
    validate_reg(lam_w=lam_w, lam_h=lam_h, lam_b=lam_b)
    auto_lam = 0.25 * math.sqrt(min(counts)) / sum(counts)
    lam_w = auto_lam if lam_w is None else float(lam_w)
    lam_h = auto_lam if lam_h is None else float(lam_h)
    dim = k if dim is None else check_positive("dim", dim, upper=MAX_DIM, integer=True)
    if classifier == "etf" and dim < k - 1:
        raise UserError(
            f"an ETF classifier of {k} classes needs dim >= K-1 = {k - 1}, got dim={dim}: "
            f"pass --dim {k - 1} or more"
        )
    etf_scale = check_positive("etf_scale (the length of the fixed ETF rows)", etf_scale)
    if loss == "dr":
        if classifier != "etf":
            raise UserError("the dot-regression loss needs the fixed classifier: --classifier etf")
        if bias:
            raise UserError("the dot-regression loss has no bias: drop --bias")
        feature_norm = 1.0 if feature_norm is None else feature_norm
    if feature_norm is not None:
        feature_norm = check_positive("feature_norm", feature_norm)
    elif lam_h <= 0:
        raise UserError("free features need lam_h > 0 (or a feature norm constraint)")
    if classifier == "learnable" and lam_w <= 0:
        raise UserError("a learnable classifier needs lam_w > 0")
    if tol is not None:
        tol = check_positive("tol", tol)
    if max_iter is not None:
        max_iter = check_positive("max_iter", max_iter, upper=10**7, integer=True)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UserError(f"seed must be an integer in [0, 2^32), got {seed!r}")
    columns = sum(counts) if per_sample else k
    if per_sample and columns > MAX_SAMPLE_COLUMNS:
        raise UserError(
            f"--per-sample solves one feature per sample: N = {columns} is above the limit "
            f"{MAX_SAMPLE_COLUMNS} (the per-class solve gives the same optimum)"
        )
    variables = (k * dim if classifier == "learnable" else 0) + dim * columns + k
    if variables > MAX_VARIABLES:
        raise UserError(
            f"K = {k}, dim = {dim}{' per sample' if per_sample else ''} needs {variables} "
            f"variables, above the limit {MAX_VARIABLES}: use a smaller --dim (d = K suffices)"
        )
    return {
        "dim": dim, "loss": loss, "classifier": classifier, "lam_w": lam_w, "lam_h": lam_h,
        "lam_b": lam_b, "bias": bias, "feature_norm": feature_norm, "etf_scale": etf_scale,
        "lam": 2 * math.sqrt(lam_w * lam_h), "per_sample": per_sample, "tol": tol,
        "max_iter": max_iter,
    }  # fmt: skip


def _check_tail(tail, k: int) -> list[int] | None:
    if tail is None:
        return None
    try:
        out = sorted({int(t) for t in tail})
    except (TypeError, ValueError):
        raise UserError(f"tail classes must be class indices, got {tail!r}") from None
    if any(t < 0 or t >= k for t in out):
        raise UserError(f"tail classes must lie in [0, {k}), got {tail!r}")
    return out
