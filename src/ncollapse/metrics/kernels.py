"""Neural-collapse kernels: pure functions from per-class statistics to metrics.

Everything here is float64 NumPy and has no state: the streaming accumulator
(:mod:`ncollapse.metrics.accumulator`) and the in-memory path
(:func:`ncollapse.metrics.collapse_metrics`) gather the statistics, these functions turn them
into numbers. The unconstrained-feature-model simulator calls the same functions on its
solutions, so a metric has one definition in the package.

Notation: K classes, d feature dimension, n_k samples of class k, class means mu_k, the
class-balanced mean mu_bar = (1/K) sum_k mu_k (the centre used under imbalance: the
sample-weighted mean would be pulled towards the head classes), centred means
m_k = mu_k - mu_bar, and W the (K, d) classifier (rows are class vectors). The definitions
follow Papyan, Han & Donoho (2020); the minority-collapse index follows Fang et al. (2021).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .accuracy import FEW_THRESHOLD

__all__ = [
    "COINCIDE_RTOL",
    "default_tail_classes",
    "etf_error",
    "metrics_from_statistics",
    "minority_collapse_index",
    "nc3_distance",
    "vector_geometry",
]

#: Vectors closer to each other than this fraction of the configuration's scale (the largest
#: vector norm) are treated as coinciding. Features are usually float32, which carries about
#: seven significant digits, so smaller differences are not measurable.
COINCIDE_RTOL = 1e-6


def _array(x: Any) -> np.ndarray:
    """float64 NumPy copy of an array, tensor (any device) or nested list."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def default_tail_classes(class_counts: Sequence[int]) -> list[int]:
    """The tail classes T of the minority-collapse indices.

    The few-shot classes (training count < 20) if there are at least two; otherwise the
    smallest third by count: the ``max(2, K // 3)`` classes with the smallest counts (ties go
    to the larger class index, i.e. later classes in a long-tail profile). Zero counts are
    ignored (a class that is absent cannot collapse). Returns sorted class indices.
    """
    counts = [int(c) for c in class_counts]
    present = [k for k, c in enumerate(counts) if c > 0]
    few = [k for k in present if counts[k] < FEW_THRESHOLD]
    if len(few) >= 2:
        return sorted(few)
    size = max(2, len(counts) // 3)
    order = sorted(present, key=lambda k: (counts[k], -k))
    return sorted(order[:size])


def _unit_rows(vecs: np.ndarray) -> np.ndarray:
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-300)


def etf_error(vectors: Any) -> float:
    """Distance of the rows' geometry from a simplex ETF: ``|| G/||G||_F - C/||C||_F ||_F``.

    ``G`` is the Gram matrix of the unit rows, ``C = I - 11^T/K`` that of a simplex ETF. 0 for
    K vectors of any common length pairwise at cosine -1/(K-1); ``nan`` if every row is zero.
    """
    v = _array(vectors)
    unit = _unit_rows(v)
    gram = unit @ unit.T
    k = v.shape[0]
    target = np.eye(k) - np.full((k, k), 1.0 / k)
    gnorm = np.linalg.norm(gram)
    return (
        float(np.linalg.norm(gram / gnorm - target / np.linalg.norm(target)))
        if gnorm > 0
        else math.nan
    )


def vector_geometry(vectors: Any) -> dict[str, Any]:
    """NC2-type statistics of the rows of ``vectors`` (K, d).

    Returns ``norms`` (K,), ``cos`` (K, K) cosines, ``equinorm`` (std/mean of the norms),
    ``equiangular`` (std of the pairwise cosines), ``maxangle`` (mean |cos + 1/(K-1)|) and
    ``etf_error`` (:func:`etf_error`); ``nan`` where undefined.
    """
    v = _array(vectors)
    k = v.shape[0]
    norms = np.linalg.norm(v, axis=1)
    mean_norm = norms.mean()
    unit = _unit_rows(v)
    gram = unit @ unit.T
    cos = gram[np.triu_indices(k, 1)]
    return {
        "norms": norms,
        "cos": gram,
        "equinorm": float(norms.std() / mean_norm) if mean_norm > 0 else math.nan,
        "equiangular": float(cos.std()) if cos.size else math.nan,
        "maxangle": float(np.abs(cos + 1.0 / (k - 1)).mean()) if cos.size else math.nan,
        "etf_error": etf_error(v),
    }


def minority_collapse_index(
    vectors: Any,
    members: Sequence[int],
    num_classes: int | None = None,
    rtol: float = COINCIDE_RTOL,
) -> float | None:
    """Minority-collapse index of the rows ``vectors[members]``: 0 for a simplex ETF, 1 when
    those rows coincide (Fang et al., 2021; Hong & Ling, 2023).

    ``(c + 1/(K-1)) / (1 + 1/(K-1))`` with ``c`` the mean pairwise cosine among the member
    rows and K = ``num_classes`` (default: the number of rows). The cosine of two vectors is
    only meaningful while they are distinguishable from each other: when every pairwise
    distance among the members is at most ``rtol`` times the largest norm of *all* rows (the
    scale of the configuration), the members coincide to working precision and the index is
    1, whatever the cosines of their rounding noise say (this is the limit of the formula for
    coinciding vectors, and it also covers members shrunk to the origin while the other rows
    stay large). ``None`` with fewer than two members.
    """
    members = [int(m) for m in members]
    if len(members) < 2:
        return None
    v = _array(vectors)
    k = v.shape[0] if num_classes is None else int(num_classes)
    sub = v[members]
    scale = float(np.linalg.norm(v, axis=1).max()) if v.size else 0.0
    spread = float(np.linalg.norm(sub[:, None, :] - sub[None, :, :], axis=2).max())
    if spread <= rtol * scale or scale == 0.0:
        return 1.0
    unit = _unit_rows(sub)
    cos_mean = float((unit @ unit.T)[np.triu_indices(len(members), 1)].mean())
    off = 1.0 / (k - 1)
    return (cos_mean + off) / (1.0 + off)


def nc3_distance(classifier: Any, class_means: Any) -> float:
    """NC3 self-duality ``|| W/||W||_F - Mc/||Mc||_F ||_F^2`` (0 when W is aligned with Mc).

    ``classifier``: (K, d) rows; ``class_means``: (K, d) *uncentred* class means, centred here
    on their class-balanced mean. ``nan`` when W or Mc is zero.
    """
    w = _array(classifier)
    mu = _array(class_means)
    mc = mu - mu.mean(axis=0, keepdims=True)
    wn, mn = np.linalg.norm(w), np.linalg.norm(mc)
    if wn == 0 or mn == 0:
        return math.nan
    return float(np.sum((w / wn - mc / mn) ** 2))


def _clean(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _nc1(mc: np.ndarray, sigma_w: np.ndarray) -> float:
    """(1/K) tr(Sigma_W Sigma_B^+) with Sigma_B = Mc^T Mc / K, through the SVD of Mc: the
    pseudo-inverse keeps the numerically non-zero singular directions only."""
    kp, dim = mc.shape
    _, s, vh = np.linalg.svd(mc, full_matrices=False)
    eig = s**2
    emax = eig.max() if eig.size else 0.0
    keep = eig > emax * max(kp, dim) * np.finfo(np.float64).eps if emax > 0 else eig > 0
    if not keep.any():
        return math.inf
    v = vh[keep]
    quad = ((v @ sigma_w) * v).sum(axis=1)
    return float((kp * quad / eig[keep]).sum() / kp)


def _cdnv(mu: np.ndarray, var: np.ndarray) -> float:
    """Mean over pairs of (s_k^2 + s_l^2) / (2 ||mu_k - mu_l||^2); coinciding means give inf
    (0 when both variances are 0 too)."""
    iu = np.triu_indices(mu.shape[0], 1)
    dist2 = ((mu[iu[0]] - mu[iu[1]]) ** 2).sum(axis=1)
    num = var[iu[0]] + var[iu[1]]
    safe = np.where(dist2 > 0, 2 * dist2, 1.0)
    coinciding = np.where(num > 0, np.inf, 0.0)
    return float(np.where(dist2 > 0, num / safe, coinciding).mean())


def metrics_from_statistics(
    counts: Any,
    means: Any,
    scatter: Any,
    class_ss: Any,
    classifier: Any = None,
    tail_classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Every neural-collapse metric except NC4 from sufficient statistics.

    ``counts`` (K,); ``means`` (K, d) uncentred class means; ``scatter`` (d, d) =
    sum_k sum_{i in k} (h_i - mu_k)(h_i - mu_k)^T; ``class_ss`` (K,) = sum_{i in k}
    ||h_i - mu_k||^2; ``classifier`` optional (K, d). Classes with no sample are excluded from
    every mean-based statistic and listed under ``missing_classes``.
    """
    counts, means = _array(counts), _array(means)
    scatter, class_ss = _array(scatter), _array(class_ss)
    num_classes, dim = means.shape
    present = [k for k in range(num_classes) if counts[k] > 0]
    missing = [k for k in range(num_classes) if counts[k] <= 0]
    if len(present) < 2:
        raise ValueError(
            f"collapse metrics need at least 2 classes with samples, got {len(present)}"
        )
    kp = len(present)
    mu = means[present]
    mc = mu - mu.mean(axis=0)
    n_total = float(counts.sum())
    out: dict[str, Any] = {
        "num_classes": int(num_classes),
        "num_samples": int(n_total),
        "class_counts": [int(c) for c in counts],
        "missing_classes": missing,
        "nc1": _nc1(mc, scatter / n_total),
        "cdnv": _cdnv(mu, class_ss[present] / counts[present]),
    }
    geo = vector_geometry(mc)
    for key in ("equinorm", "equiangular", "maxangle", "etf_error"):
        out[f"nc2_{key}"] = _clean(geo[key])
    mean_norms: list[float | None] = [None] * num_classes
    for j, k in enumerate(present):
        mean_norms[k] = float(geo["norms"][j])
    out["mean_norms"] = mean_norms
    tail = (
        default_tail_classes(counts.astype(np.int64).tolist())
        if tail_classes is None
        else sorted(int(t) for t in tail_classes)
    )
    out["tail_classes"] = tail
    pos = {k: j for j, k in enumerate(present)}
    out["minority_collapse_means"] = minority_collapse_index(
        mc, [pos[t] for t in tail if t in pos], kp
    )
    if classifier is not None:
        w = _array(classifier)
        if w.shape != (num_classes, dim):
            raise ValueError(
                f"classifier must have shape (K, d) = ({num_classes}, {dim}), got {tuple(w.shape)}"
            )
        wg = vector_geometry(w)
        for key in ("equinorm", "equiangular", "maxangle", "etf_error"):
            out[f"w_{key}"] = _clean(wg[key])
        out["w_norms"] = [float(x) for x in wg["norms"]]
        out["nc3"] = nc3_distance(w[present], mu)
        out["minority_collapse_w"] = minority_collapse_index(w, tail, num_classes)
    return out
