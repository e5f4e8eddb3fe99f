"""Unconstrained feature model (UFM, "layer-peeled model") simulator.

Library entry points::

    from ncollapse.ufm import solve, threshold, converge, phase_diagram, sample_size_sweep

Modules: ``problem`` (counts, checks, limits), ``solvers`` (:func:`solve`, the front door),
``factored`` / ``convex`` / ``descent`` (one solver family each), ``solution`` (the result and
its metrics), ``threshold``, ``rates``, ``phase``, ``samples`` (the experiments). Throughout,
``ratio`` is the imbalance ratio n_max / n_min >= 1. See ``docs/ufm.md`` for the model, the
reductions and the measured figures.
"""

from __future__ import annotations

from .convex import factor_convex, solve_convex
from .descent import sphere_gradient_descent
from .factored import solve_factored
from .phase import phase_diagram
from .problem import (
    MAX_CLASSES,
    default_tail,
    long_tail_profile,
    minority_index,
    minority_spread,
    nc3,
    parse_counts,
    two_group_counts,
)
from .rates import BEST_STEP_GRID, DEFAULT_STEPS, converge, convergence_rate
from .samples import prediction_etf_distance, sample_size_sweep
from .solution import UFMSolution, collapse_report
from .solvers import etf_classifier, solve
from .threshold import minority_collapse_state, theoretical_threshold, threshold

__all__ = [
    "BEST_STEP_GRID",
    "DEFAULT_STEPS",
    "MAX_CLASSES",
    "UFMSolution",
    "collapse_report",
    "converge",
    "convergence_rate",
    "default_tail",
    "etf_classifier",
    "factor_convex",
    "long_tail_profile",
    "minority_collapse_state",
    "minority_index",
    "minority_spread",
    "nc3",
    "parse_counts",
    "phase_diagram",
    "prediction_etf_distance",
    "sample_size_sweep",
    "solve",
    "solve_convex",
    "solve_factored",
    "sphere_gradient_descent",
    "theoretical_threshold",
    "threshold",
    "two_group_counts",
]
