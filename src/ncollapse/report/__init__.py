"""Tables and plots from run directories and from a user's own features (docs/metrics.md)."""

from __future__ import annotations

from ..collapse_file import COLLAPSE_STATE_FILE, load_collapse_state, save_collapse_state
from .analysis import analyze_runs
from .features import analyze_features
from .plots import plot_collapse_curves, plot_cosine_matrices, plot_per_class
from .runs import Run, read_run

__all__ = [
    "COLLAPSE_STATE_FILE",
    "Run",
    "analyze_features",
    "analyze_runs",
    "load_collapse_state",
    "plot_collapse_curves",
    "plot_cosine_matrices",
    "plot_per_class",
    "read_run",
    "save_collapse_state",
]
