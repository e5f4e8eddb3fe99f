"""``collapse_final.npz``, the per-class vectors a run keeps for the cosine-matrix plots.

The format and its reader and writer belong to the run directory (:mod:`ncollapse.rundir`);
they are re-exported here for the report functions and for users' own features files.
"""

from __future__ import annotations

from ..rundir import COLLAPSE_STATE_FILE, load_collapse_state, save_collapse_state

__all__ = ["COLLAPSE_STATE_FILE", "load_collapse_state", "save_collapse_state"]
