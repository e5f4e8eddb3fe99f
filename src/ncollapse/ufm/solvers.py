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

from ..errors import UserError
from .common import etf_classifier
from .convex import factor_convex, solve_convex
from .descent import sphere_gradient_descent
from .factored import solve_factored
from .problem import parse_counts, validate_reg
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
    k = len(counts)
    dim = k if dim is None else int(dim)
    if loss not in ("ce", "dr"):
        raise UserError(f"unknown loss {loss!r}: valid: ce, dr")
    if classifier not in ("learnable", "etf"):
        raise UserError(f"unknown classifier {classifier!r}: valid: learnable, etf")
    validate_reg(lam_w=lam_w, lam_h=lam_h, lam_b=lam_b)
    auto_lam = 0.25 * math.sqrt(min(counts)) / sum(counts)
    lam_w = auto_lam if lam_w is None else float(lam_w)
    lam_h = auto_lam if lam_h is None else float(lam_h)
    if method not in ("factored", "convex", "auto"):
        raise UserError(f"unknown method {method!r}: valid: auto, factored, convex")
    if dim < 1:
        raise UserError(f"dim must be a positive integer, got {dim}")
    if classifier == "etf" and dim < k - 1:
        raise UserError(
            f"an ETF classifier of {k} classes needs dim >= K-1 = {k - 1}, got dim={dim}: "
            f"pass --dim {k - 1} or more"
        )
    if loss == "dr":
        if classifier != "etf":
            raise UserError("the dot-regression loss needs the fixed classifier: --classifier etf")
        feature_norm = 1.0 if feature_norm is None else feature_norm
    if feature_norm is not None and not feature_norm > 0:
        raise UserError(f"feature_norm must be > 0, got {feature_norm!r}")
    if feature_norm is None and lam_h <= 0:
        raise UserError("free features need lam_h > 0 (or a feature norm constraint)")
    if classifier == "learnable" and lam_w <= 0:
        raise UserError("a learnable classifier needs lam_w > 0")
    settings = {
        "dim": dim, "loss": loss, "classifier": classifier, "lam_w": lam_w, "lam_h": lam_h,
        "lam_b": lam_b, "bias": bias, "feature_norm": feature_norm, "etf_scale": etf_scale,
        "lam": 2 * math.sqrt(lam_w * lam_h), "per_sample": per_sample,
    }  # fmt: skip
    if method == "auto":
        convex_ok = loss == "ce" and classifier == "learnable" and feature_norm is None
        method = "convex" if convex_ok and not per_sample and dim >= k else "factored"
    if method == "convex":
        if loss != "ce" or classifier != "learnable" or feature_norm is not None or per_sample:
            raise UserError(
                "--method convex is the nuclear-norm form of learnable CE with free features: "
                "use --loss ce --classifier learnable (no feature norm)"
            )
        res = solve_convex(
            counts, settings["lam"], bias=bias, lam_b=lam_b,
            tol=1e-10 if tol is None else tol, max_iter=max_iter or 200000,
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
            lam_b=lam_b, bias=bias, feature_norm=feature_norm, etf_scale=etf_scale,
            per_sample=per_sample, tol=1e-7 if tol is None else tol,
            max_iter=max_iter or 20000, seed=seed,
        )  # fmt: skip
    sol.settings = settings
    sol.metrics = collapse_report(sol, tail)
    sol.seconds = time.perf_counter() - t0
    return sol
