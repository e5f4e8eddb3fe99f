"""L-BFGS on the factored UFM in (W, H, b), float64 with analytic gradients.

Objective (no 1/2 factors, ``||H||_F^2`` over all N samples)::

    (1/N) sum_i loss(W h_i + b, y_i) + lam_W ||W||_F^2 + lam_H ||H||_F^2 + lam_b ||b||^2

Per-class reduction: the objective is strictly convex in each h_i given (W, b) (a convex loss
plus ``lam_H ||h_i||^2``, lam_H > 0) and the samples of one class enter it identically, so at
any stationary point all samples of class k share one feature h_k. The solver therefore works
on K columns with weights n_k: loss weight n_k/N and feature penalty ``lam_H n_k ||h_k||^2``.
``per_sample=True`` solves the original N-column problem instead (a check, for tiny cases).
With the sphere constraint on the features the same argument applies to the per-sample
problems of the fixed-ETF case, which are separable.

W is learnable or fixed to a scaled simplex ETF; features are free (penalised by lam_H) or on a
sphere of radius ``feature_norm`` (parametrised h = r u/||u||). The losses are cross-entropy
and the dot-regression loss of Yang et al. (2022).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import UserError
from .common import ce_loss, dr_loss, etf_classifier, single_thread, tangent
from .problem import validate_counts
from .solution import UFMSolution

__all__ = ["solve_factored"]


@single_thread
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
            val, gz = ce_loss(z, labels, lw)
            gh = w.T @ gz
            gw = gz @ h.T
            gb = gz.sum(axis=1)
        else:
            val, gh = dr_loss(h, w, labels, lw, r)
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
            gh_t = tangent(h, gh)
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
