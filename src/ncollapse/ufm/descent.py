"""Plain gradient descent on unit-norm per-class features under the fixed ETF classifier.

The iteration counts and convergence rates of the cross-entropy and dot-regression losses
(Yang et al., 2022, compare the two) come from here: see :mod:`ncollapse.ufm.rates`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import nc3_distance
from .common import ce_loss, dr_loss, etf_classifier, single_thread, tangent
from .problem import validate_counts

__all__ = ["sphere_gradient_descent"]


@single_thread
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
    trace: bool = False,
) -> dict[str, Any]:
    """Full-batch gradient descent on unit-norm per-class features, W = fixed ETF.

    Gradients of (1/N) sum_k n_k loss_k (no bias, no lam_H: the sphere replaces it); DR's is
    ``(<h,w> - ||w|| ||h||)/||h|| w`` with the norm treated as a constant, as in the loss's
    definition (Yang et al., 2022).

    - ``param="projected"``: ``h_k <- normalise(h_k - step * grad_k)`` (projected GD on the
      sphere, the loss gradient taken at h as the losses define it);
    - ``param="normalised"``: h_k = u_k/||u_k|| with u_k free and plain GD on u_k, the
      gradient passing through the normalisation (what the ETF head's L2 normalisation does
      to the backbone's gradient).

    Stops when NC3 < ``nc3_tol`` (``nc3_tol=0`` runs all ``max_iter`` iterations). Returns
    ``{"iterations" (None if not reached), "seconds", "nc3"}``, plus ``"trace"`` (NC3 before
    the first and after every iteration) when ``trace`` is set.
    """
    if param not in ("projected", "normalised"):
        raise UserError(f"unknown parametrisation {param!r}: valid: projected, normalised")
    if loss not in ("ce", "dr"):
        raise UserError(f"unknown loss {loss!r}: valid: ce, dr")
    if not (math.isfinite(step) and step > 0):
        raise UserError(f"step sizes must be finite numbers > 0, got {step!r}")
    if not nc3_tol >= 0:
        raise UserError(f"nc3 tolerance must be >= 0, got {nc3_tol!r}")
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
    value = nc3_distance(w, h.T)
    values = [value]

    def result(iterations: int | None) -> dict[str, Any]:
        out = {"iterations": iterations, "seconds": time.perf_counter() - t0, "nc3": value}
        if trace:
            out["trace"] = values
        return out

    if value < nc3_tol:
        return result(0)
    for it in range(1, max_iter + 1):
        if loss == "ce":
            _, gz = ce_loss(w @ h, labels, lw)
            g = w.T @ gz
        else:
            _, g = dr_loss(h, w, labels, lw, 1.0)
        if param == "projected":
            h = h - step * g
            h /= np.maximum(np.linalg.norm(h, axis=0, keepdims=True), 1e-300)
        else:
            un = np.linalg.norm(u, axis=0, keepdims=True)
            u = u - step * tangent(h, g) / un
            h = u / np.maximum(np.linalg.norm(u, axis=0, keepdims=True), 1e-300)
        value = nc3_distance(w, h.T)
        values.append(value)
        if not math.isfinite(value):
            break
        if value < nc3_tol:
            return result(it)
    return result(None)
