"""Learnable cross-entropy UFM through its convex nuclear-norm form (Hong & Ling, 2023).

With the logits ``Z = W H`` (K x K, column k the logits of class k) and D = diag(n_k)::

    min_{Z, b} (1/N) sum_k n_k CE(z_k + b, k) + lam ||Z D^{1/2}||_* + lam_b ||b||^2,
    lam = 2 sqrt(lam_W lam_H).

Why: with H' = H D^{1/2}, ``lam_H sum_k n_k ||h_k||^2 = lam_H ||H'||_F^2`` and
``W H' = Z D^{1/2}``; the minimum of ``lam_W ||W||^2 + lam_H ||H'||^2`` over factorisations of a
fixed matrix Y is ``2 sqrt(lam_W lam_H) ||Y||_*`` (AM-GM on the balanced SVD factorisation),
reached whenever d >= rank(Y). :func:`solve_convex` solves in Y = Z D^{1/2} by accelerated
proximal gradient (FISTA with backtracking and adaptive restart) whose proximal step is
singular-value soft-thresholding; :func:`factor_convex` factors Y = U S V^T back into
``W = a U S^{1/2}``, ``H = a^{-1} S^{1/2} V^T D^{-1/2}``, ``a = (lam_H/lam_W)^{1/4}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UserError
from .common import ce_loss, single_thread
from .problem import validate_counts

__all__ = ["factor_convex", "solve_convex"]


def _svt(y: np.ndarray, thresh: float) -> tuple[np.ndarray, float]:
    u, s, vt = np.linalg.svd(y, full_matrices=False)
    s = np.maximum(s - thresh, 0.0)
    return (u * s) @ vt, float(s.sum())


@single_thread
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
        val, gz = ce_loss(z, labels, lw)
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
