"""Accuracy splits and neural-collapse metrics (see docs/metrics.md)."""

from __future__ import annotations

from .accuracy import count_groups, index_groups, long_tail_accuracy
from .collapse import (
    CollapseAccumulator,
    collapse_metrics,
    default_tail_classes,
    measure_collapse,
)

__all__ = [
    "CollapseAccumulator",
    "collapse_metrics",
    "count_groups",
    "default_tail_classes",
    "index_groups",
    "long_tail_accuracy",
    "measure_collapse",
]
