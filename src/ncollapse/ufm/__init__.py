"""Unconstrained feature model (UFM, "layer-peeled model") simulator: SPEC section 7.

Library entry points::

    from ncollapse.ufm import solve, threshold, converge, phase_diagram

See ``docs/ufm.md`` for the model, the per-class reduction, the nuclear-norm form and the
measured figures.
"""

from __future__ import annotations

from .experiments import (
    DEFAULT_STEPS,
    converge,
    minority_collapse_state,
    phase_diagram,
    theoretical_threshold,
    threshold,
)
from .problem import (
    default_tail,
    long_tail_profile,
    minority_index,
    minority_spread,
    nc3,
    parse_counts,
    two_group_counts,
)
from .solvers import (
    UFMSolution,
    collapse_report,
    etf_classifier,
    factor_convex,
    solve,
    solve_convex,
    solve_factored,
    sphere_gradient_descent,
)

__all__ = [
    "DEFAULT_STEPS",
    "UFMSolution",
    "collapse_report",
    "converge",
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
    "solve",
    "solve_convex",
    "solve_factored",
    "sphere_gradient_descent",
    "theoretical_threshold",
    "threshold",
    "two_group_counts",
]
