"""A grid of runs (methods x imbalance factors x seeds) on one recipe, with a results table.

The sweep directory holds

    sweep.json      the grid and the settings every cell shares (recipe, epochs, --set, subset seed)
    <method>-ir<ratio>-s<seed>/   one ordinary run directory per cell and seed
    results.csv     per (method, imbalance): mean and standard deviation over the finished seeds
    results.md      the same as a Markdown table

- :mod:`.spec`: the grid and each cell's config; :mod:`.execute`: running cells (one process,
  several processes on one directory, or one cell per cluster job); :mod:`.results`: the tables.

Cells run one after another and the sweep is resumable: a finished run is never retrained, one
with a checkpoint is resumed from it, and one stopped before its first checkpoint is started
afresh. ``results.*`` are rewritten after every finished cell. Several processes may share one
directory (each cell is claimed with a lock file and trained once), and ``--cell I`` runs exactly
one cell, for job arrays; ``--collect`` rebuilds the tables from whatever has finished.

Rerunning into the same directory with other *axes* (methods, imbalance factors, seeds) extends
or narrows the grid; other *settings* (recipe, epochs, ``--set`` overrides, subset seed) would
mix incomparable runs, so the sweep refuses and lists the differences.
"""

from __future__ import annotations

from .execute import list_cells, run_sweep, stale_cells
from .results import (
    ACC_KEYS,
    COLLAPSE_KEYS,
    METRIC_KEYS,
    aggregate,
    collect,
    format_markdown,
    missing_cells,
    read_spec,
    write_results,
)
from .spec import (
    SweepSpec,
    cell_name,
    parse_imbalance,
    parse_methods,
    parse_ratios,
    parse_seeds,
    ratio_label,
)

__all__ = [
    "ACC_KEYS",
    "COLLAPSE_KEYS",
    "METRIC_KEYS",
    "SweepSpec",
    "aggregate",
    "cell_name",
    "collect",
    "format_markdown",
    "list_cells",
    "missing_cells",
    "parse_imbalance",
    "parse_methods",
    "parse_ratios",
    "parse_seeds",
    "ratio_label",
    "read_spec",
    "run_sweep",
    "stale_cells",
    "write_results",
]
