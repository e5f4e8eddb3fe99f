"""Growing the sample size at a fixed imbalance ratio (Hong & Ling, 2023, result (d)).

Learnable CE in the convex form, two groups (K_A classes of ``ratio * n_B`` samples, K_B
classes of n_B). With n_k = n * rho_k the convex problem depends on n only through
``mu = lam * sqrt(n_B)``: the loss weights n_k/N are fixed by the ratio and
``lam ||Z D^{1/2}||_* = lam sqrt(n_B) ||Z diag(sqrt(n_k/n_B))||_*``. So what "more samples"
does depends on how the regularisation scales with N:

- ``scaling="sum"``: the weight decay of a *summed* loss is fixed (``lam = lam_sum / N``), so
  mu falls like 1/sqrt(n_B): more data, relatively less regularisation. The mean predictions
  z_k = W h_k approach the simplex-encoded labels e_k - 1/K (a simplex ETF aligned with the
  labels; the limit of vanishing regularisation, cf. Thrampoulidis et al., 2022), and the
  imbalance fades: the distance falls like 1/log(1/mu), slowly.
- ``scaling="mean"``: lam of the mean loss is fixed, mu grows like sqrt(n_B), and past
  ``lam = sqrt(n_B) / N`` the minority classes collapse (the threshold of Fang et al. and
  Hong & Ling): the opposite trend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import etf_error
from .convex import solve_convex
from .problem import check_positive, check_ratio, minority_index, two_group_counts

__all__ = ["prediction_etf_distance", "sample_size_sweep"]


def prediction_etf_distance(z: np.ndarray) -> float:
    """``|| Z/||Z||_F - S/||S||_F ||_F`` with ``S = I - 11^T/K``: distance of the mean
    predictions (column k: the logits of class k) from the simplex-encoded labels, an ETF
    aligned with the labels. 0 exactly when the columns form that ETF (up to scale)."""
    k = z.shape[0]
    s = np.eye(k) - 1.0 / k
    zn = np.linalg.norm(z)
    if zn == 0:
        return math.nan
    return float(np.linalg.norm(z / zn - s / np.linalg.norm(s)))


def sample_size_sweep(
    ratio: float,
    n_b_values: Sequence[int],
    k_a: int = 5,
    k_b: int = 5,
    lam: float = 1.0,
    scaling: str = "sum",
    bias: bool = False,
    tol: float = 1e-12,
    max_iter: int = 200000,
) -> dict[str, Any]:
    """Geometry of the mean predictions as n_B grows at a fixed ``ratio`` = n_A / n_B.

    ``scaling="sum"``: ``lam`` is the weight decay of the summed loss (the solve uses
    lam / N); ``"mean"``: ``lam`` is used as is. Each row: n_B, N, the lam solved, ``mu`` (the
    only way n enters), the distance of the mean predictions from the label-aligned ETF
    (:func:`prediction_etf_distance`), the Gram-based ETF error of the logit columns, the
    minority-collapse index of the minority logit columns, and whether the solve settled.
    """
    r = check_ratio(ratio)
    if scaling not in ("sum", "mean"):
        raise UserError(f"unknown scaling {scaling!r}: valid: sum, mean")
    lam = check_positive("lam", lam)
    values = [check_positive("n_B", n, integer=True) for n in n_b_values]
    rows = []
    for n_b in values:
        n_a = round(r * n_b)
        counts = two_group_counts(k_a, n_a, k_b, n_b)
        n_total = sum(counts)
        lam_solved = lam / n_total if scaling == "sum" else lam
        res = solve_convex(counts, lam_solved, bias=bias, tol=tol, max_iter=max_iter)
        z = res["Z"]
        rows.append({
            "n_b": n_b, "n_a": n_a, "N": n_total, "lam": lam_solved,
            "mu": lam_solved * math.sqrt(n_b),
            "etf_distance": prediction_etf_distance(z),
            "etf_error": etf_error(z.T),
            "minority_collapse_logits": minority_index(z.T, range(k_a, k_a + k_b)),
            "logit_norm": float(np.linalg.norm(z)),
            "converged": bool(res["converged"]),
        })  # fmt: skip
    return {"ratio": r, "ka": k_a, "kb": k_b, "lam": lam, "scaling": scaling, "bias": bias,
            "rows": rows}  # fmt: skip
