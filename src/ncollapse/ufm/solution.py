"""A solved UFM (:class:`UFMSolution`) and its neural-collapse report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import collapse_metrics, metrics_from_statistics
from .problem import default_tail, minority_spread

__all__ = ["UFMSolution", "collapse_report"]


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


def collapse_report(sol: UFMSolution, tail: list[int] | None = None) -> dict[str, Any]:
    """Neural-collapse metrics of a solution, from :mod:`ncollapse.metrics`.

    Per-class solutions are measured from their exact statistics (each class's samples all sit
    on its feature: class means = the features, zero within-class scatter), so nothing of size
    N is built; NC4 weighs each class by its count. Per-sample solutions go through
    :func:`~ncollapse.metrics.collapse_metrics`. Adds ``minority_spread`` (largest distance
    between two tail logit columns relative to ``||Z||_F``; 0 = collapsed) and ``logit_norm``.
    """
    counts = sol.counts
    k = len(counts)
    tail = default_tail(counts) if tail is None else list(tail)
    if sol.labels is not None:
        out = dict(
            collapse_metrics(
                sol.H.T, sol.labels, classifier=sol.W, tail_classes=tail, num_classes=k, bias=sol.b
            )
        )
    else:
        means, w = _reduced(sol.class_features, sol.W)
        d = means.shape[1]
        n = np.asarray(counts, dtype=np.float64)
        out = metrics_from_statistics(n, means, np.zeros((d, d)), np.zeros(k), w, tail)
        # NC4: every sample of class k sits on mu_k; its nearest mean is mu_k itself (the
        # lowest index among coinciding means, as the streaming kernel breaks ties)
        d2 = ((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        nearest = d2.argmin(axis=1)
        pred = sol.Z.argmax(axis=0)
        out["nc4"] = float(n[pred != nearest].sum() / n.sum())
    out["minority_spread"] = minority_spread(sol.Z, tail)
    out["logit_norm"] = float(np.linalg.norm(sol.Z))  # 0: every class collapsed to one point
    return out


def _reduced(means: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same vectors in an orthonormal basis of their span when d > 2K: every metric
    depends on inner products only, and the (d, d) scatter would otherwise dominate the cost."""
    k, d = means.shape
    if d <= 2 * k:
        return means, w
    q, _ = np.linalg.qr(np.concatenate([means, w]).T)  # (d, 2K)
    return means @ q, w @ q
