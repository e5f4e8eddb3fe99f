"""The UFM experiments behind ``ncollapse ufm threshold | converge | phase | samples``.

Kept for code that imports them from here; each lives in its own module:
:mod:`~ncollapse.ufm.threshold`, :mod:`~ncollapse.ufm.rates`, :mod:`~ncollapse.ufm.phase`,
:mod:`~ncollapse.ufm.samples`.
"""

from __future__ import annotations

from .phase import phase_diagram
from .rates import BEST_STEP_GRID, DEFAULT_STEPS, converge, convergence_rate
from .samples import prediction_etf_distance, sample_size_sweep
from .threshold import minority_collapse_state, theoretical_threshold, threshold

__all__ = [
    "BEST_STEP_GRID",
    "DEFAULT_STEPS",
    "converge",
    "convergence_rate",
    "minority_collapse_state",
    "phase_diagram",
    "prediction_etf_distance",
    "sample_size_sweep",
    "theoretical_threshold",
    "threshold",
]
