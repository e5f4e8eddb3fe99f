"""Pieces shared by the UFM solvers: the fixed ETF classifier, the two losses with their
gradients, the tangent projection of the sphere, and single-threaded BLAS.

Everything is float64 NumPy; columns are samples (or classes, after the per-class reduction).
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import UserError

__all__ = ["ce_loss", "dr_loss", "etf_classifier", "single_thread", "tangent"]


def single_thread(fn):
    """Run ``fn`` with BLAS limited to one thread: the matrices are at most a few hundred
    wide, where threads only cost (oversubscribed BLAS threads made a K = 100 solve 10-40x
    slower on a busy 2-core machine). threadpoolctl comes with scikit-learn; without it, no
    limit."""

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
    """(K, d) fixed classifier: rows are the vertices of :func:`ncollapse.geometry.simplex_etf`
    times ``scale``."""
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


def ce_loss(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """``sum_j weights_j CE(z[:, j], labels_j)`` and its gradient wrt z (columns are samples)."""
    zmax = z.max(axis=0, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=0, keepdims=True)
    lse = (np.log(s) + zmax)[0]
    cols = np.arange(z.shape[1])
    loss = float(np.dot(weights, lse - z[labels, cols]))
    g = e / s
    g[labels, cols] -= 1.0
    return loss, g * weights[None, :]


def dr_loss(
    h: np.ndarray, w: np.ndarray, labels: np.ndarray, weights: np.ndarray, radius: float
) -> tuple[float, np.ndarray]:
    """Dot-regression loss (Yang et al., 2022) of features ``h`` (d, m) against their target
    rows of ``w``, and its gradient wrt h.

    ``1/2 (<h, w_y> - ||w_y|| ||h||)^2 / ||h||`` with the norm ``||h||`` treated as a constant
    (stop-gradient), so the gradient ``(<h, w_y> - ||w_y|| ||h||)/||h|| * w_y`` only pulls h
    towards its own vertex. ``radius`` is unused (kept for callers; the norm is measured).
    """
    del radius
    wy = w[labels].T  # d x m
    wn = np.linalg.norm(wy, axis=0)
    r = np.maximum(np.linalg.norm(h, axis=0), 1e-8)
    resid = (h * wy).sum(axis=0) - wn * r
    loss = float(np.dot(weights, 0.5 * resid**2 / r))
    return loss, wy * (weights * resid / r)[None, :]


def tangent(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Project per-column gradients ``g`` onto the tangent spaces of the spheres through h."""
    u = h / np.maximum(np.linalg.norm(h, axis=0, keepdims=True), 1e-300)
    return g - u * (u * g).sum(axis=0, keepdims=True)
