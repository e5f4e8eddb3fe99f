"""Streaming neural-collapse statistics: memory O(K d + d^2), independent of the sample count.

:class:`CollapseAccumulator` gathers per-class counts, means, sums of squared deviations and
the pooled within-class scatter batch by batch (on any device, in float64), and hands them to
:func:`ncollapse.metrics.kernels.metrics_from_statistics`. :func:`measure_collapse` runs its two
passes over a re-iterable source of batches. Every batch is given as features, labels, then
(optionally) logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .kernels import metrics_from_statistics

__all__ = ["CollapseAccumulator", "measure_collapse"]

_F64 = torch.float64


def as_tensor(x: Any, dtype: torch.dtype = _F64, device: Any = None) -> torch.Tensor:
    """A detached tensor of ``dtype`` on ``device`` (default: where ``x`` already is)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def as_labels(x: Any, n: int | None = None, device: Any = None) -> torch.Tensor:
    """1-D int64 labels, checked against the number of feature rows ``n``."""
    y = as_tensor(x, dtype=torch.int64, device=device)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"features have {n} rows but labels have {y.shape[0]}")
    return y


def nearest_mean(
    features: torch.Tensor, means: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """Index of the nearest class mean (among ``present`` classes) for each feature row."""
    mu = means[present]
    d2 = (features**2).sum(1, keepdim=True) - 2 * features @ mu.T + (mu**2).sum(1).unsqueeze(0)
    return present[d2.argmin(dim=1)]


def linear_logits(features: torch.Tensor, classifier: Any, bias: Any) -> torch.Tensor:
    """``features @ classifier.T + bias`` in float64 on the features' device."""
    out = features @ as_tensor(classifier, device=features.device).T
    if bias is not None:
        out = out + as_tensor(bias, device=features.device)
    return out


class CollapseAccumulator:
    """Streaming neural-collapse statistics: memory O(K d + d^2), independent of N.

    Pass 1: :meth:`update` with every batch of (features, labels). It keeps, in float64,
    per-class counts and means, the per-class sum of squared deviations, and the pooled
    within-class scatter matrix, merged batch by batch with Chan et al.'s parallel update (each
    batch is centred on its own per-class means, then the correction
    ``n_a n_b / (n_a + n_b) * delta delta^T`` merges it), so there is no cancellation from
    raw second moments.

    Pass 2 (optional, for NC4): :meth:`update_nc4` with (features, labels, logits) for the same
    data, after the first pass is complete: it compares argmax of the logits with the nearest
    class mean *of the first pass*.

    :meth:`compute` returns the dict of :func:`ncollapse.metrics.collapse_metrics` (``nc4``
    only after pass 2).
    """

    def __init__(self, num_classes: int, dim: int, device: Any = None) -> None:
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        k, d, dev = self.num_classes, self.dim, self.device
        self.counts = torch.zeros(k, dtype=_F64, device=dev)
        self.means = torch.zeros(k, d, dtype=_F64, device=dev)
        self.class_ss = torch.zeros(k, dtype=_F64, device=dev)
        self.scatter = torch.zeros(d, d, dtype=_F64, device=dev)
        self.nc4_mismatch = 0
        self.nc4_total = 0

    @torch.no_grad()
    def update(self, features: Any, labels: Any) -> None:
        """Add a batch: ``features`` (B, d), ``labels`` (B,)."""
        h = as_tensor(features, device=self.device)
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got shape {tuple(h.shape)}")
        y = as_labels(labels, h.shape[0], device=self.device)
        if y.numel() == 0:
            return
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        k = self.num_classes
        nb = torch.bincount(y, minlength=k).to(_F64)
        sums = torch.zeros(k, self.dim, dtype=_F64, device=self.device).index_add_(0, y, h)
        mb = sums / nb.clamp_min(1).unsqueeze(1)
        centred = h - mb[y]
        self.scatter += centred.T @ centred
        ss_b = torch.zeros(k, dtype=_F64, device=self.device).index_add_(0, y, (centred**2).sum(1))
        seen = torch.nonzero(nb > 0).flatten()
        na = self.counts[seen]
        nbs = nb[seen]
        ntot = na + nbs
        delta = mb[seen] - self.means[seen]
        weight = na * nbs / ntot  # 0 for classes seen for the first time
        self.scatter += (delta * weight.unsqueeze(1)).T @ delta
        self.class_ss[seen] += ss_b[seen] + weight * (delta**2).sum(1)
        self.means[seen] += delta * (nbs / ntot).unsqueeze(1)
        self.counts[seen] = ntot

    @torch.no_grad()
    def merge(self, other: CollapseAccumulator) -> None:
        """Add another accumulator's first-pass statistics (the same classes and dimension, any
        data: another process's share, say), exactly as if its batches had been added here
        (Chan et al.'s parallel combination, as :meth:`update` merges a batch); NC4 counts add."""
        if (other.num_classes, other.dim) != (self.num_classes, self.dim):
            raise ValueError(
                f"cannot merge statistics of {other.num_classes} classes x {other.dim} into "
                f"{self.num_classes} x {self.dim}"
            )
        nb = other.counts.to(self.device)
        seen = torch.nonzero(nb > 0).flatten()
        na, nbs = self.counts[seen], nb[seen]
        ntot = na + nbs
        delta = other.means.to(self.device)[seen] - self.means[seen]
        weight = na * nbs / ntot
        self.scatter += other.scatter.to(self.device) + (delta * weight.unsqueeze(1)).T @ delta
        self.class_ss[seen] += other.class_ss.to(self.device)[seen] + weight * (delta**2).sum(1)
        self.means[seen] += delta * (nbs / ntot).unsqueeze(1)
        self.counts[seen] = ntot
        self.nc4_mismatch += other.nc4_mismatch
        self.nc4_total += other.nc4_total

    @torch.no_grad()
    def update_nc4(
        self,
        features: Any,
        labels: Any = None,
        logits: Any = None,
        classifier: Any = None,
        bias: Any = None,
    ) -> None:
        """Second pass: count samples where argmax(logits) != nearest class mean of pass 1.

        Arguments in the package's order: features (B, d), labels (B,), logits (B, K).
        Without ``logits`` they are ``features @ classifier.T + bias``. ``labels`` are not
        needed for NC4 (it compares two predictions) and may be ``None``.
        """
        h = as_tensor(features, device=self.device)
        if logits is None:
            if classifier is None:
                raise ValueError("update_nc4 needs logits or a classifier")
            logits = linear_logits(h, classifier, bias)
        lg = as_tensor(logits, device=self.device)
        if lg.ndim != 2 or lg.shape[0] != h.shape[0]:
            raise ValueError(
                f"logits must be (B, K) with B = {h.shape[0]} feature rows, got shape {tuple(lg.shape)}"
            )
        present = torch.nonzero(self.counts > 0).flatten()
        if present.numel() == 0:
            raise RuntimeError("update_nc4 needs the first pass (update) to be complete")
        ncc = nearest_mean(h, self.means, present)
        self.nc4_mismatch += int((lg.argmax(dim=1) != ncc).sum())
        self.nc4_total += h.shape[0]

    def compute(
        self,
        classifier: Any = None,
        bias: Any = None,
        tail_classes: Sequence[int] | None = None,
    ) -> dict:
        """The metrics dict (see :func:`ncollapse.metrics.collapse_metrics`); ``nc4`` after a
        second pass. ``bias`` is accepted for symmetry (it only matters for NC4, whose logits
        come from :meth:`update_nc4`)."""
        del bias
        out = metrics_from_statistics(
            self.counts, self.means, self.scatter, self.class_ss, classifier, tail_classes
        )
        if self.nc4_total:
            out["nc4"] = self.nc4_mismatch / self.nc4_total
        return out

    def state(self) -> dict:
        """Arrays for :func:`ncollapse.report.save_collapse_state` (uncentred class means)."""
        counts = self.counts.cpu().numpy()
        means = self.means.cpu().numpy()
        return {
            "class_means": means,
            "global_mean": (means * counts[:, None]).sum(0) / max(counts.sum(), 1.0),
            "class_counts": counts.astype(np.int64),
        }


def _is_logits(x: Any) -> bool:
    return x is None or np.ndim(x) == 2


def _batch(item: Sequence[Any]) -> tuple[Any, Any, Any]:
    """(features, labels, logits) from a batch tuple.

    The order is features, labels, logits (logits optional). Tuples in the former order
    (features, logits, labels) are still recognised by shape (labels are 1-D, logits 2-D or
    ``None``) and read with a DeprecationWarning.
    """
    if len(item) == 2:
        return item[0], item[1], None
    if len(item) != 3:
        raise ValueError(
            f"a batch is (features, labels) or (features, labels, logits), got {len(item)} items"
        )
    feats, second, third = item
    if _is_logits(second) and not _is_logits(third):
        warnings.warn(
            "measure_collapse batches as (features, logits, labels) are deprecated: "
            "yield (features, labels, logits)",
            DeprecationWarning,
            stacklevel=3,
        )
        return feats, third, second
    return feats, second, third


def measure_collapse(
    batches_factory: Callable[[], Iterable[Sequence[Any]]],
    num_classes: int,
    dim: int,
    classifier: Any = None,
    bias: Any = None,
    tail_classes: Sequence[int] | None = None,
    device: Any = None,
) -> dict:
    """Two passes over ``batches_factory()`` (each call a fresh iterable of
    ``(features, labels)`` or ``(features, labels, logits)``): statistics first, then NC4
    against those means.

    ``logits`` may be missing or ``None`` when a ``classifier`` (and optional ``bias``) is
    given; NC4 is reported whenever logits or a classifier are available.
    """
    acc = CollapseAccumulator(num_classes, dim, device=device)
    any_logits = False
    for item in batches_factory():
        feats, labels, logits = _batch(item)
        acc.update(feats, labels)
        any_logits = any_logits or logits is not None
    if any_logits or classifier is not None:
        for item in batches_factory():
            feats, labels, logits = _batch(item)
            acc.update_nc4(feats, labels, logits=logits, classifier=classifier, bias=bias)
    return acc.compute(classifier=classifier, bias=bias, tail_classes=tail_classes)
