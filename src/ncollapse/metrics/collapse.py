"""Neural-collapse measurements of features held in memory.

:func:`collapse_metrics` computes the per-class statistics of an (N, d) feature array in one go
and hands them to the kernels of :mod:`ncollapse.metrics.kernels`; the streaming
:class:`~ncollapse.metrics.accumulator.CollapseAccumulator` gives the same numbers with memory
independent of N. Both are re-exported here and from :mod:`ncollapse.metrics`.

Classes with no sample in the measured data are *excluded* from every mean-based statistic
(their mean is undefined): K is then the number of present classes, the class-balanced mean
averages the present classes only, and they are listed under ``"missing_classes"``. Per-class
lists (``mean_norms``) hold ``None`` for them. The classifier statistics (``w_*``) use all K
rows; NC3 compares the present rows of W with the present centred means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .accumulator import (
    CollapseAccumulator,
    as_labels,
    as_tensor,
    linear_logits,
    measure_collapse,
    nearest_mean,
)
from .kernels import default_tail_classes, metrics_from_statistics

__all__ = [
    "CollapseAccumulator",
    "collapse_metrics",
    "default_tail_classes",
    "measure_collapse",
]

_F64 = torch.float64


def collapse_metrics(
    features: Any,
    labels: Any,
    classifier: Any = None,
    tail_classes: Sequence[int] | None = None,
    num_classes: int | None = None,
    bias: Any = None,
) -> dict:
    """All neural-collapse measurements of ``features`` (N, d) with ``labels`` (N,), in memory.

    ``classifier``: optional (K, d) matrix (rows: class vectors); ``bias``: optional (K,) added to
    the logits for NC4 (linear heads). ``tail_classes``: the set T of the minority-collapse
    indices (default :func:`default_tail_classes` of the *label counts of these data*: pass the
    training-set tail classes when measuring a balanced test set). ``num_classes`` defaults to
    the classifier's rows, else ``max(label) + 1``.

    Keys: nc1, cdnv, nc2_equinorm, nc2_equiangular, nc2_maxangle, nc2_etf_error,
    minority_collapse_means, mean_norms, class_counts, missing_classes, tail_classes,
    num_classes, num_samples; with a classifier also w_equinorm, w_equiangular, w_maxangle,
    w_etf_error, w_norms, nc3, nc4, minority_collapse_w. Values are Python floats / lists
    (``None`` where undefined, e.g. a minority index with fewer than two tail classes).
    """
    h = as_tensor(features).cpu()
    if h.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(h.shape)}")
    y = as_labels(labels, h.shape[0]).cpu()
    if num_classes is None:
        num_classes = int(np.shape(classifier)[0]) if classifier is not None else int(y.max()) + 1
    k = int(num_classes)
    if y.numel() and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{int(y.min())}, {int(y.max())}]")
    d = h.shape[1]
    counts = torch.bincount(y, minlength=k).to(_F64)
    sums = torch.zeros(k, d, dtype=_F64).index_add_(0, y, h)
    means = sums / counts.clamp_min(1).unsqueeze(1)
    centred = h - means[y]
    scatter = centred.T @ centred
    class_ss = torch.zeros(k, dtype=_F64).index_add_(0, y, (centred**2).sum(1))
    out = metrics_from_statistics(counts, means, scatter, class_ss, classifier, tail_classes)
    if classifier is not None:
        present = torch.nonzero(counts > 0).flatten()
        pred = linear_logits(h, classifier, bias).argmax(dim=1)
        out["nc4"] = float((pred != nearest_mean(h, means, present)).to(_F64).mean())
    return out
