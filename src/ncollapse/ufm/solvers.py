"""Float64 solvers of the unconstrained feature model (SPEC section 7).

Objective (no 1/2 factors, ``||H||_F^2`` over all N samples)::

    (1/N) sum_i loss(W h_i + b, y_i) + lam_W ||W||_F^2 + lam_H ||H||_F^2 + lam_b ||b||^2

Per-class reduction: the objective is strictly convex in each h_i given (W, b) (a convex loss
plus ``lam_H ||h_i||^2``, lam_H > 0) and the samples of one class enter it identically, so at
any stationary point all samples of class k share one feature h_k. The solvers therefore work
on K columns with weights n_k: loss weight n_k/N and feature penalty ``lam_H n_k ||h_k||^2``.
``per_sample=True`` solves the original N-column problem instead (a check, for tiny cases).
With the unit-sphere feature constraint the same argument applies to the per-sample problems
of the fixed-ETF case, which are separable.

Three solvers:

- :func:`solve_factored`: L-BFGS (scipy) on the factored problem in (W, H, b) with analytic
  gradients; W learnable or fixed to a scaled simplex ETF; features free (penalised by lam_H) or
  on a sphere of radius ``feature_norm`` (parametrised h = r u/||u||).
- :func:`solve_convex`: learnable CE through the equivalent convex problem in the logits
  ``Z = W H`` (K x K, column k the logits of class k)::

      min_{Z, b} (1/N) sum_k n_k CE(z_k + b, k) + lam ||Z D^{1/2}||_* + lam_b ||b||^2,
      lam = 2 sqrt(lam_W lam_H),  D = diag(n_k).

  Proof of the correspondence: with H' = H D^{1/2}, ``lam_H sum_k n_k ||h_k||^2 =
  lam_H ||H'||_F^2`` and ``W H' = Z D^{1/2}``; the minimum of ``lam_W ||W||^2 + lam_H ||H'||^2``
  over factorisations of a fixed matrix Y is ``2 sqrt(lam_W lam_H) ||Y||_*`` (AM-GM on the
  balanced SVD factorisation), reached whenever d >= rank(Y). We solve in Y = Z D^{1/2} by
  accelerated proximal gradient (FISTA with backtracking and adaptive restart) whose proximal
  step is singular-value soft-thresholding, then factor Y = U S V^T back into
  ``W = a U S^{1/2}``, ``H = a^{-1} S^{1/2} V^T D^{-1/2}``, ``a = (lam_H/lam_W)^{1/4}``.
- :func:`sphere_gradient_descent`: plain projected gradient descent on the unit sphere under
  the fixed ETF (CE or DR), used to count iterations for SPEC fact 3.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from .problem import (
    default_tail,
    minority_index,
    minority_spread,
    nc3,
    validate_counts,
    validate_reg,
)

__all__ = [
    "UFMSolution",
    "collapse_report",
    "etf_classifier",
    "solve",
    "solve_convex",
    "solve_factored",
    "sphere_gradient_descent",
]


@dataclass
class UFMSolution:
    """A solved UFM. ``W``: (K, d); ``H``: (d, K) per-class features (or (d, N) per sample);
    ``b``: (K,) or None; ``Z``: (K, K) logit columns per class (``W h_k + b``)."""

    counts: list[int]
    W: np.ndarray
    H: np.ndarray
    b: np.ndarray | None
    objective: float
    loss: float
    iterations: int
    converged: bool
    grad_norm: float
    seconds: float
    method: str
    settings: dict = field(default_factory=dict)
    labels: np.ndarray | None = None  # per column of H (per-sample solves)
    metrics: dict = field(default_factory=dict)

    @property
    def class_features(self) -> np.ndarray:
        """(K, d) per-class features (class means)."""
        if self.labels is None:
            return self.H.T.copy()
        k = len(self.counts)
        return np.stack([self.H[:, self.labels == c].mean(axis=1) for c in range(k)])

    @property
    def Z(self) -> np.ndarray:
        z = self.W @ self.class_features.T
        if self.b is not None:
            z = z + self.b[:, None]
        return z

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "method": self.method,
            "settings": self.settings,
            "objective": self.objective,
            "loss": self.loss,
            "iterations": self.iterations,
            "converged": self.converged,
            "grad_norm": self.grad_norm,
            "seconds": self.seconds,
            "metrics": self.metrics,
        }


# ----------------------------------------------------------------------------------------------
# pieces


def _single_thread(fn):
    """Run ``fn`` with BLAS limited to one thread: the matrices are at most ~100 x 100, where
    threads only cost (oversubscribed BLAS threads made a K = 100 solve 10-40x slower on a
    busy 2-core machine). threadpoolctl comes with scikit-learn; without it, no limit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        controller = _blas_controller()
        if controller is None:  # pragma: no cover
            return fn(*args, **kwargs)
        with controller.limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """One cached threadpoolctl controller (discovering the libraries is the slow part)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def etf_classifier(dim: int, num_classes: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """(K, d) fixed classifier: rows are the vertices of :func:`ncollapse.geometry.simplex_etf`."""
    if dim < num_classes - 1:
        raise UserError(
            f"an ETF classifier of {num_classes} classes needs dim >= K-1 = {num_classes - 1}, "
            f"got dim={dim}: pass --dim {num_classes - 1} or more"
        )
    return scale * _etf_rows(int(dim), int(num_classes), int(seed))


@functools.lru_cache(maxsize=32)
def _etf_rows(dim: int, num_classes: int, seed: int) -> np.ndarray:
    import torch

    from ..geometry import simplex_etf

    rows = simplex_etf(dim, num_classes, seed=seed, dtype=torch.float64).numpy().T.copy()
    rows.flags.writeable = False
    return rows


def _ce(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """sum_j weights_j CE(z[:, j], labels_j) and its gradient wrt z (columns are samples)."""
    zmax = z.max(axis=0, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=0, keepdims=True)
    lse = (np.log(s) + zmax)[0]
    cols = np.arange(z.shape[1])
    loss = float(np.dot(weights, lse - z[labels, cols]))
    g = e / s
    g[labels, cols] -= 1.0
    return loss, g * weights[None, :]


def _dr(
    h: np.ndarray, w: np.ndarray, labels: np.ndarray, weights: np.ndarray, radius: float
) -> tuple[float, np.ndarray]:
    """SPEC section 3 dot-regression on features of norm ``radius``; gradient wrt h."""
    wy = w[labels].T  # d x m
    wn = np.linalg.norm(wy, axis=0)
    r = np.maximum(np.linalg.norm(h, axis=0), 1e-8)
    resid = (h * wy).sum(axis=0) - wn * r
    loss = float(np.dot(weights, 0.5 * resid**2 / r))
    return loss, wy * (weights * resid / r)[None, :]


def _tangent(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Project per-column gradients onto the tangent spaces of the spheres through h."""
    u = h / np.maximum(np.linalg.norm(h, axis=0, keepdims=True), 1e-300)
    return g - u * (u * g).sum(axis=0, keepdims=True)


# ----------------------------------------------------------------------------------------------
# factored problem


@_single_thread
def solve_factored(
    counts: list[int],
    dim: int,
    loss: str = "ce",
    classifier: str = "learnable",
    lam_w: float = 5e-4,
    lam_h: float = 5e-4,
    lam_b: float = 0.0,
    bias: bool = False,
    feature_norm: float | None = None,
    etf_scale: float = 1.0,
    per_sample: bool = False,
    tol: float = 1e-7,
    max_iter: int = 20000,
    seed: int = 0,
) -> UFMSolution:
    """L-BFGS on the factored UFM (see the module docstring); float64, analytic gradients."""
    from scipy.optimize import minimize  # scipy ships with scikit-learn, a dependency

    t0 = time.perf_counter()
    counts = validate_counts(counts)
    k = len(counts)
    n_total = float(sum(counts))
    if per_sample:
        labels = np.repeat(np.arange(k), counts)
        colw = np.ones(len(labels))
    else:
        labels = np.arange(k)
        colw = np.asarray(counts, dtype=np.float64)
    m = len(labels)
    lw = colw / n_total  # loss weights
    rng = np.random.default_rng(seed)
    learn_w = classifier == "learnable"
    w_fixed = None if learn_w else etf_classifier(dim, k, etf_scale, seed)
    sphere = feature_norm is not None
    r = float(feature_norm) if sphere else 1.0
    if loss == "dr" and bias:
        raise UserError("the dot-regression loss has no bias: drop --bias")

    # initial point
    w0 = rng.standard_normal((k, dim)) * 0.1 if learn_w else np.zeros((0, dim))
    u0 = rng.standard_normal((dim, m)) * 0.1
    if sphere:
        u0 *= r / np.linalg.norm(u0, axis=0, keepdims=True)
    b0 = np.zeros(k if bias else 0)
    shapes = [w0.shape, u0.shape, b0.shape]
    sizes = [int(np.prod(s)) for s in shapes]

    def unpack(x):
        parts, i = [], 0
        for s, n in zip(shapes, sizes):
            parts.append(x[i : i + n].reshape(s))
            i += n
        return parts

    def fg(x, want_riemannian=False):
        w, u, b = unpack(x)
        w = w if learn_w else w_fixed
        if sphere:
            un = np.linalg.norm(u, axis=0, keepdims=True)
            h = r * u / np.maximum(un, 1e-300)
        else:
            h = u
        if loss == "ce":
            z = w @ h
            if bias:
                z = z + b[:, None]
            val, gz = _ce(z, labels, lw)
            gh = w.T @ gz
            gw = gz @ h.T
            gb = gz.sum(axis=1)
        else:
            val, gh = _dr(h, w, labels, lw, r)
            gw = np.zeros_like(w)
            gb = np.zeros(0)
        data = val
        if learn_w:
            val += lam_w * float(np.sum(w * w))
            gw = gw + 2 * lam_w * w
        if not sphere:
            val += lam_h * float(np.sum(colw * np.sum(h * h, axis=0)))
            gh = gh + 2 * lam_h * h * colw[None, :]
        if bias:
            val += lam_b * float(np.sum(b * b))
            gb = gb + 2 * lam_b * b
        if sphere:
            gh_t = _tangent(h, gh)
            gu = gh_t * (r / np.maximum(un, 1e-300))
        else:
            gh_t = gh
            gu = gh
        parts = [gw if learn_w else np.zeros((0, dim)), gu, gb if bias else np.zeros(0)]
        grad = np.concatenate([p.ravel() for p in parts])
        if want_riemannian:
            rg = math.sqrt(
                (float(np.sum(gw * gw)) if learn_w else 0.0)
                + float(np.sum(gh_t * gh_t))
                + (float(np.sum(gb * gb)) if bias else 0.0)
            )
            return val, grad, rg, data
        return val, grad

    x = np.concatenate([w0.ravel(), u0.ravel(), b0.ravel()])
    iters = 0
    gnorm = math.inf
    val = data = math.nan
    for _ in range(20):  # restarts after line-search stalls
        res = minimize(
            fg,
            x,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter - iters, "gtol": tol * 1e-3, "ftol": 0.0, "maxcor": 10},
        )
        x = res.x
        if sphere:  # keep u on the sphere so gradients in u and h coincide
            w, u, b = unpack(x)
            u *= r / np.maximum(np.linalg.norm(u, axis=0, keepdims=True), 1e-300)
        iters += int(res.nit)
        val, _, gnorm, data = fg(x, want_riemannian=True)
        if gnorm < tol or iters >= max_iter or res.nit == 0:
            break
    w, u, b = unpack(x)
    w = w.copy() if learn_w else w_fixed
    h = r * u / np.linalg.norm(u, axis=0, keepdims=True) if sphere else u.copy()
    return UFMSolution(
        counts=counts,
        W=w,
        H=h,
        b=b.copy() if bias else None,
        objective=float(val),
        loss=float(data),
        iterations=iters,
        converged=bool(gnorm < tol),
        grad_norm=float(gnorm),
        seconds=time.perf_counter() - t0,
        method="factored-lbfgs" + ("-per-sample" if per_sample else ""),
        labels=labels if per_sample else None,
    )


# ----------------------------------------------------------------------------------------------
# convex nuclear-norm form (learnable CE)


def _svt(y: np.ndarray, thresh: float) -> tuple[np.ndarray, float]:
    u, s, vt = np.linalg.svd(y, full_matrices=False)
    s = np.maximum(s - thresh, 0.0)
    return (u * s) @ vt, float(s.sum())


@_single_thread
def solve_convex(
    counts: list[int],
    lam: float,
    bias: bool = False,
    lam_b: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 200000,
    y0: np.ndarray | None = None,
    b0: np.ndarray | None = None,
) -> dict[str, Any]:
    """FISTA on ``min_{Y,b} sum_k (n_k/N) CE(y_k/sqrt(n_k) + b, k) + lam ||Y||_* + lam_b ||b||^2``.

    Returns ``{"Y", "Z", "b", "objective", "iterations", "converged", "grad_map_norm"}``;
    ``Z = Y D^{-1/2}`` (without the bias). Convergence: norm of the proximal gradient mapping
    below ``tol``.
    """
    counts = validate_counts(counts)
    k = len(counts)
    n = np.asarray(counts, dtype=np.float64)
    n_total = n.sum()
    sq = np.sqrt(n)
    lw = n / n_total
    labels = np.arange(k)

    def smooth(y, b):
        z = y / sq[None, :]
        if bias:
            z = z + b[:, None]
        val, gz = _ce(z, labels, lw)
        gy = gz / sq[None, :]
        gb = gz.sum(axis=1) + 2 * lam_b * b if bias else np.zeros(0)
        if bias:
            val += lam_b * float(b @ b)
        return val, gy, gb

    y = np.zeros((k, k)) if y0 is None else y0.copy()
    b = np.zeros(k if bias else 0) if b0 is None or not bias else b0.copy()
    yx, bx = y.copy(), b.copy()  # extrapolated point
    t_mom = 1.0
    # 1/L with L = 1/(2N) (Hessian of the CE part wrt Y), adapted below. The bias is
    # preconditioned: it moves with step/N (its curvature is about N times that of Y).
    # In the variables (Y, beta = sqrt(N) b) the Hessian of the smooth part is bounded by
    # (1 + 2 lam_b)/N, so step_min = N/(1 + 2 lam_b) always satisfies the descent condition:
    # backtracking stops there (below it the test would only be rounding noise).
    step = 2.0 * n_total
    bscale = 1.0 / n_total
    step_min = n_total / (1.0 + 2.0 * lam_b)
    f_prev = math.inf
    converged = False
    gmap = math.inf
    it = 0
    while it < max_iter:
        it += 1
        fx, gy, gb = smooth(yx, bx)
        while True:
            y_new, nuc = _svt(yx - step * gy, step * lam)
            b_new = bx - step * bscale * gb
            f_new, _, _ = smooth(y_new, b_new)
            dy, db = y_new - yx, b_new - bx
            quad = fx + float(np.sum(gy * dy)) + float(db @ gb)
            quad += (float(np.sum(dy * dy)) + float(db @ db) / bscale) / (2 * step)
            if step <= step_min or f_new <= quad + 1e-15 * abs(fx):
                break
            step = max(0.5 * step, step_min)
        gmap = math.sqrt(float(np.sum(dy * dy)) + float(db @ db) / bscale) / step
        obj = f_new + lam * nuc
        if obj > f_prev:  # adaptive restart (O'Donoghue & Candes)
            t_mom = 1.0
            yx, bx = y.copy(), b.copy()
            f_prev = math.inf
            continue
        t_next = 0.5 * (1 + math.sqrt(1 + 4 * t_mom * t_mom))
        beta = (t_mom - 1) / t_next
        yx = y_new + beta * (y_new - y)
        bx = b_new + beta * (b_new - b)
        y, b, t_mom, f_prev = y_new, b_new, t_next, obj
        step *= 1.1  # let the step grow again
        if gmap < tol:
            converged = True
            break
    f_smooth, _, _ = smooth(y, b)
    nuc = float(np.linalg.svd(y, compute_uv=False).sum())
    return {
        "Y": y,
        "Z": y / sq[None, :],
        "b": b if bias else None,
        "objective": f_smooth + lam * nuc,
        "loss": f_smooth - (lam_b * float(b @ b) if bias else 0.0),
        "iterations": it,
        "converged": converged,
        "grad_map_norm": gmap,
    }


def factor_convex(
    y: np.ndarray, counts: list[int], lam_w: float, lam_h: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factorisation of ``Y = Z D^{1/2}`` into (W (K, d), H (d, K)), d >= rank(Y)."""
    k = y.shape[0]
    u, s, vt = np.linalg.svd(y)
    rank = int(np.sum(s > 1e-12 * max(s.max(), 1e-300)))
    if dim < rank:
        raise UserError(f"dim={dim} is below the rank {rank} of the convex solution; use dim >= K")
    a = (lam_h / lam_w) ** 0.25
    w = np.zeros((k, dim))
    hp = np.zeros((dim, k))
    r = min(dim, k)
    w[:, :r] = a * u[:, :r] * np.sqrt(s[:r])[None, :]
    hp[:r, :] = np.sqrt(s[:r])[:, None] * vt[:r, :] / a
    h = hp / np.sqrt(np.asarray(counts, dtype=np.float64))[None, :]
    return w, h


# ----------------------------------------------------------------------------------------------
# metrics


def collapse_report(sol: UFMSolution, tail: list[int] | None = None) -> dict[str, Any]:
    """Neural-collapse metrics of a solution.

    Uses :func:`ncollapse.metrics.collapse_metrics` on the per-sample features (each class's
    feature repeated n_k times) when that module is installed, else the UFM's own NC3 and
    minority-collapse indices (same SPEC definitions). Always adds ``minority_spread``: the
    largest distance between two tail logit columns relative to ``||Z||_F`` (0 = collapsed).
    """
    counts = sol.counts
    tail = default_tail(counts) if tail is None else list(tail)
    means = sol.class_features
    out: dict[str, Any]
    try:
        from ..metrics import collapse_metrics
    except ImportError:
        collapse_metrics = None
    if collapse_metrics is not None:
        if sol.labels is None:
            feats = np.repeat(means, counts, axis=0)
            labels = np.repeat(np.arange(len(counts)), counts)
        else:
            feats, labels = sol.H.T, sol.labels
        out = dict(
            collapse_metrics(
                feats,
                labels,
                classifier=sol.W,
                tail_classes=tail,
                num_classes=len(counts),
                bias=sol.b,
            )
        )
        out["metrics_source"] = "ncollapse.metrics"
    else:
        out = {
            "nc3": nc3(sol.W, means),
            "minority_collapse_w": minority_index(sol.W, tail),
            "minority_collapse_means": minority_index(means - means.mean(axis=0), tail),
            "w_norms": np.linalg.norm(sol.W, axis=1).tolist(),
            "mean_norms": np.linalg.norm(means - means.mean(axis=0), axis=1).tolist(),
            "tail_classes": tail,
            "metrics_source": "ncollapse.ufm (minimal)",
        }
    out["minority_spread"] = minority_spread(sol.Z, tail)
    out["logit_norm"] = float(np.linalg.norm(sol.Z))  # 0: every class collapsed to one point
    return out


# ----------------------------------------------------------------------------------------------
# front door


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
    from .problem import parse_counts

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


# ----------------------------------------------------------------------------------------------
# iteration counts under the fixed ETF (fact 3)


@_single_thread
def sphere_gradient_descent(
    counts: list[int],
    dim: int,
    loss: str,
    step: float,
    nc3_tol: float = 1e-3,
    max_iter: int = 20000,
    etf_scale: float = 1.0,
    seed: int = 0,
    param: str = "projected",
) -> dict[str, Any]:
    """Full-batch gradient descent on unit-norm per-class features, W = fixed ETF.

    Gradients of (1/N) sum_k n_k loss_k (no bias, no lam_H: the sphere replaces it); DR's is
    the SPEC section 3 gradient ``(<h,w> - ||w|| ||h||)/||h|| w`` (norm stop-gradiented).

    - ``param="projected"``: ``h_k <- normalise(h_k - step * grad_k)`` (projected GD on the
      sphere, the loss gradient taken at h as the losses define it);
    - ``param="normalised"``: h_k = u_k/||u_k|| with u_k free and plain GD on u_k, the
      gradient passing through the normalisation (what the ETF head's L2 normalisation does
      to the backbone's gradient).

    Stops when NC3 < ``nc3_tol``. Returns ``{"iterations" (None if not reached), "seconds",
    "nc3"}``.
    """
    if param not in ("projected", "normalised"):
        raise UserError(f"unknown parametrisation {param!r}: valid: projected, normalised")
    counts = validate_counts(counts)
    k = len(counts)
    w = etf_classifier(dim, k, etf_scale, seed)
    labels = np.arange(k)
    lw = np.asarray(counts, dtype=np.float64) / sum(counts)
    rng = np.random.default_rng(seed + 1)
    h = rng.standard_normal((dim, k))
    h /= np.linalg.norm(h, axis=0, keepdims=True)
    u = h.copy()
    t0 = time.perf_counter()
    value = nc3(w, h.T)
    if value < nc3_tol:
        return {"iterations": 0, "seconds": 0.0, "nc3": value}
    for it in range(1, max_iter + 1):
        if loss == "ce":
            _, gz = _ce(w @ h, labels, lw)
            g = w.T @ gz
        else:
            _, g = _dr(h, w, labels, lw, 1.0)
        if param == "projected":
            h = h - step * g
            h /= np.maximum(np.linalg.norm(h, axis=0, keepdims=True), 1e-300)
        else:
            un = np.linalg.norm(u, axis=0, keepdims=True)
            u = u - step * _tangent(h, g) / un
            h = u / np.maximum(np.linalg.norm(u, axis=0, keepdims=True), 1e-300)
        value = nc3(w, h.T)
        if not math.isfinite(value):
            break
        if value < nc3_tol:
            return {"iterations": it, "seconds": time.perf_counter() - t0, "nc3": value}
    return {"iterations": None, "seconds": time.perf_counter() - t0, "nc3": value}
