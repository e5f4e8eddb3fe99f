"""PNG plots from run directories or from a user's own features: collapse curves, cosine
matrices of class means and classifier rows, per-class accuracy and feature-mean norms against
class size (:mod:`.analysis` writes them beside its markdown summary).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch),
so this is safe on headless machines and inside other programs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import atomic_write_bytes
from .runs import Run

__all__ = ["collapse_epochs", "plot_collapse_curves", "plot_cosine_matrices", "plot_per_class"]

CURVES = (
    ("nc1", "NC1  tr(Σ_W Σ_B⁺)/K", True),
    ("nc2_etf_error", "NC2  ETF error of class means", False),
    ("nc3", "NC3  ||W/‖W‖ − M/‖M‖||²", False),
    ("nc4", "NC4  classifier ≠ nearest mean", False),
)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)  # no tight bbox/layout: each costs a full extra draw
    atomic_write_bytes(path, buffer.getvalue())  # an earlier plot stays whole on a full disk
    return path


def _label(run: Run) -> str:
    return f"{run.name} ({run.method})"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def collapse_epochs(run: Run) -> list[int]:
    """The epochs at which ``run`` measured neural collapse (any split), in order."""
    return sorted({int(r["epoch"]) for r in run.select("collapse") if "epoch" in r})


def _has(run: Run, key: str, logy: bool) -> bool:
    return any(_finite(r.get(key)) and (not logy or r[key] > 0) for r in run.select("collapse"))


def plot_collapse_curves(runs: Sequence[Run], path: str | Path) -> Path | None:
    """NC1 / NC2 / NC3 / NC4 against epoch, train (solid) and test (dashed), one colour a run;
    a panel only for a quantity some run measured."""
    curves = [c for c in CURVES if any(_has(run, c[0], c[2]) for run in runs)]
    if not curves:
        return None
    rows, cols = (1, len(curves)) if len(curves) < 3 else (2, 2)
    fig = Figure(figsize=(5.5 * cols, 3.75 * rows + 0.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.92, hspace=0.3, wspace=0.2)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(curves) :]:
        ax.remove()
    colours = [f"C{i}" for i in range(10)]
    for ax, (key, title, logy) in zip(axes, curves):
        drawn = False
        for i, run in enumerate(runs):
            for split, style in (("train", "-"), ("test", "--")):
                pts = [
                    (r["epoch"], r[key])
                    for r in run.select("collapse", split)
                    if _finite(r.get(key)) and (not logy or r[key] > 0)
                ]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(
                        x,
                        y,
                        style,
                        color=colours[i % 10],
                        marker="o",
                        ms=3,
                        label=f"{_label(run)} {split}",
                    )
                    drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        once = [run.name for run in runs if len(collapse_epochs(run)) == 1]
        if drawn and once:
            ax.text(
                0.02,
                0.02,
                f"measured once: {', '.join(once)}",
                fontsize=7,
                transform=ax.transAxes,
                va="bottom",
            )
        if logy and drawn:
            ax.set_yscale("log")
        if drawn:
            ax.legend(fontsize=7)
    return _save(fig, Path(path))


def _cosines(vecs: np.ndarray) -> np.ndarray:
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-300)
    return unit @ unit.T


def _centred_means(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Class means centred on the class-balanced mean of the present classes; present mask."""
    counts = state["class_counts"]
    present = counts > 0
    means = state["class_means"].astype(np.float64)
    return means - means[present].mean(0), present


def plot_cosine_matrices(runs: Sequence[Run], path: str | Path) -> Path | None:
    """Cosine matrices of the centred class means and of the classifier rows, classes sorted by
    training count (largest first); one row of panels per run that has collapse_final.npz."""
    rows = [run for run in runs if run.state is not None]
    if not rows:
        return None
    ncols = 2 if any("classifier" in r.state for r in rows) else 1
    fig = Figure(figsize=(5.2 * ncols, 4.6 * len(rows)))
    fig.subplots_adjust(left=0.06, right=0.92, bottom=0.08, top=0.9, hspace=0.35, wspace=0.3)
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for i, run in enumerate(rows):
        counts = run.train_counts() or run.state["class_counts"].tolist()
        order = np.argsort(-np.asarray(counts), kind="stable")
        centred, present = _centred_means(run.state)
        panels = [("class means (centred)", centred, present)]
        if "classifier" in run.state:
            panels.append(("classifier rows", run.state["classifier"], np.ones_like(present)))
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(panels):
                ax.axis("off")
                continue
            title, vecs, mask = panels[j]
            cos = _cosines(vecs)
            cos[~mask, :] = np.nan
            cos[:, ~mask] = np.nan
            im = ax.imshow(cos[np.ix_(order, order)], vmin=-1, vmax=1, cmap="RdBu_r")
            ax.set_title(f"{_label(run)}\n{title}", fontsize=9)
            ax.set_xlabel("class (by training count, largest first)")
            if len(order) <= 30:  # tick labels: the class names, in plotted order
                names = run.class_names() or [str(c) for c in range(len(order))]
                labels = [names[c] for c in order]
                rot = 90 if max(len(n) for n in labels) > 3 else 0
                ax.set_xticks(range(len(order)), labels, fontsize=7, rotation=rot)
                ax.set_yticks(range(len(order)), labels, fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, Path(path))


def _mean_norms(run: Run) -> tuple[list[float | None], str] | None:
    """Per-class norms of the centred class means, and where they come from: the last
    training-set collapse record, ``collapse_final.npz``, or the last test-set record."""
    rec = run.last("collapse", "train")
    if rec and rec.get("mean_norms") is not None:
        return rec["mean_norms"], f"train, epoch {rec.get('epoch')}"
    if run.state is not None:
        centred, present = _centred_means(run.state)
        norms = [float(n) if p else None for n, p in zip(np.linalg.norm(centred, axis=1), present)]
        return norms, "train, final"
    rec = run.last("collapse", "test")
    if rec and rec.get("mean_norms") is not None:
        return rec["mean_norms"], f"test, epoch {rec.get('epoch')}"
    return None


def _points(counts: Sequence[int], values: Sequence[Any] | None) -> list[tuple[int, float]]:
    return [(c, v) for c, v in zip(counts, values or []) if v is not None and c > 0]


def plot_per_class(runs: Sequence[Run], path: str | Path) -> Path | None:
    """Per-class test accuracy and per-class feature-mean norm against training class size; a
    panel only for what some run recorded (an unfinished run may have no collapse record)."""
    panels: dict[str, list[tuple[Run, int, list[tuple[int, float]], str]]] = {
        "acc": [],
        "norm": [],
    }
    for i, run in enumerate(runs):
        counts = run.train_counts()
        if not counts:
            continue
        ev = run.last("eval", "test") or run.last("eval")
        pts = _points(counts, ev.get("per_class") if ev else None)
        if pts:
            assert ev is not None
            panels["acc"].append(
                (run, i, pts, f"{ev.get('split', 'test')}, epoch {ev.get('epoch')}")
            )
        norms = _mean_norms(run)
        pts = _points(counts, norms[0] if norms else None)
        if pts:
            assert norms is not None
            panels["norm"].append((run, i, pts, norms[1]))
    drawn = [(key, series) for key, series in panels.items() if series]
    if not drawn:
        return None
    fig = Figure(figsize=(5.5 * len(drawn), 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, wspace=0.2)
    axes = np.atleast_1d(fig.subplots(1, len(drawn)))
    titles = {"acc": "per-class accuracy", "norm": "per-class ‖μ_k − μ̄‖"}
    for ax, (key, series) in zip(axes, drawn):
        for run, i, pts, where in series:
            x, y = zip(*pts)
            ax.scatter(x, y, s=18, color=f"C{i % 10}", label=f"{_label(run)} ({where})")
        ax.set_xscale("log")
        ax.set_xlabel("training samples in class")
        ax.set_title(titles[key], fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, Path(path))
