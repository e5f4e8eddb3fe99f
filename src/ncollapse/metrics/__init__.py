"""Accuracy splits and neural-collapse metrics (see docs/metrics.md).

- :mod:`~ncollapse.metrics.kernels`: pure functions from per-class statistics to metrics
  (also used on UFM solutions);
- :mod:`~ncollapse.metrics.accumulator`: the streaming two-pass accumulator;
- :mod:`~ncollapse.metrics.collapse`: the same metrics of features held in memory;
- :mod:`~ncollapse.metrics.accuracy`: many/medium/few accuracy.
"""

from __future__ import annotations

from .accumulator import CollapseAccumulator, measure_collapse
from .accuracy import (
    balanced_accuracy,
    count_groups,
    index_groups,
    long_tail_accuracy,
    sorted_by_count,
)
from .collapse import collapse_metrics
from .kernels import (
    COINCIDE_RTOL,
    default_tail_classes,
    etf_error,
    metrics_from_statistics,
    minority_collapse_index,
    nc3_distance,
    vector_geometry,
)

__all__ = [
    "COINCIDE_RTOL",
    "CollapseAccumulator",
    "balanced_accuracy",
    "collapse_metrics",
    "count_groups",
    "default_tail_classes",
    "etf_error",
    "index_groups",
    "long_tail_accuracy",
    "measure_collapse",
    "metrics_from_statistics",
    "minority_collapse_index",
    "nc3_distance",
    "sorted_by_count",
    "vector_geometry",
]
