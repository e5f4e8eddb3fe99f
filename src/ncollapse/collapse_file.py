"""``collapse_final.npz``: the per-class vectors a run keeps for the cosine-matrix plots.

A NumPy ``.npz`` with ``class_means`` (K, d) float64 *uncentred* class means of the measured
features, ``global_mean`` (d,), ``class_counts`` (K,) int64 and optionally ``classifier``
(K, d) float64, the classifier rows (M^T for the ETF head). A run directory keeps one
(:mod:`ncollapse.rundir`); ``ncollapse analyze`` reads it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .errors import UserError

__all__ = ["COLLAPSE_STATE_FILE", "load_collapse_state", "save_collapse_state"]

COLLAPSE_STATE_FILE = "collapse_final.npz"


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def save_collapse_state(
    path: str | Path,
    source: Any = None,
    *,
    class_means: Any = None,
    global_mean: Any = None,
    class_counts: Any = None,
    classifier: Any = None,
) -> Path:
    """Write ``collapse_final.npz`` to ``path`` (a file, or a run directory).

    ``source`` is a :class:`ncollapse.metrics.CollapseAccumulator` (after its first pass) or a
    dict with the arrays; keyword arrays override it. ``global_mean`` defaults to the
    count-weighted mean of the class means. Returns the file written.
    """
    arrays: dict[str, Any] = {}
    if source is not None:
        arrays.update(source.state() if hasattr(source, "state") else dict(source))
    for key, val in (
        ("class_means", class_means),
        ("global_mean", global_mean),
        ("class_counts", class_counts),
        ("classifier", classifier),
    ):
        if val is not None:
            arrays[key] = val
    if "class_means" not in arrays or "class_counts" not in arrays:
        raise ValueError("save_collapse_state needs class_means and class_counts")
    means = _np(arrays["class_means"]).astype(np.float64)
    counts = _np(arrays["class_counts"]).astype(np.int64)
    if means.ndim != 2 or counts.shape != (means.shape[0],):
        raise ValueError(
            f"class_means must be (K, d) and class_counts (K,), got {means.shape} and {counts.shape}"
        )
    if arrays.get("global_mean") is None:
        arrays["global_mean"] = (means * counts[:, None]).sum(0) / max(int(counts.sum()), 1)
    out = {
        "class_means": means,
        "global_mean": _np(arrays["global_mean"]).astype(np.float64),
        "class_counts": counts,
    }
    if arrays.get("classifier") is not None:
        w = _np(arrays["classifier"]).astype(np.float64)
        if w.shape != means.shape:
            raise ValueError(f"classifier must be {means.shape}, got {w.shape}")
        out["classifier"] = w
    path = Path(path)
    if path.is_dir():
        path = path / COLLAPSE_STATE_FILE
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_collapse_state(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``collapse_final.npz`` (file or run directory); UserError if absent or damaged."""
    path = Path(path)
    if path.is_dir():
        path = path / COLLAPSE_STATE_FILE
    if not path.is_file():
        raise UserError(f"no collapse state file at {path}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # a damaged zip fails in many ways
        raise UserError(
            f"{path} is damaged and cannot be read ({type(exc).__name__}); it holds the final "
            "class means for the plots: delete it (analyze then plots the rest) or restore it"
        ) from None
    for key in ("class_means", "class_counts"):
        if key not in data:
            raise UserError(f"{path} lacks the array '{key}' (see docs/metrics.md)")
    return data
