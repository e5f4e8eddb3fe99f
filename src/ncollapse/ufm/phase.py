"""Phase diagram of minority collapse over lam x n_A/n_B (learnable CE, convex form), with the
theoretical boundary lam = sqrt(n_B) / N of Hong & Ling (2023)."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import UserError
from ..folders import check_output_folder, make_output_folder
from .problem import MAX_COUNT, check_positive
from .threshold import check_two_group, minority_collapse_state

__all__ = ["MAX_AXIS", "MAX_CELLS", "phase_diagram"]

#: most values on one axis of the grid
MAX_AXIS = 200
#: most cells (convex solves, about 10 ms each at K = 10) of one diagram
MAX_CELLS = 10_000


def _values(values: Sequence[float], name: str, low: float) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise UserError(f"{name}: give at least one value")
    if len(out) > MAX_AXIS:
        raise UserError(f"{name}: {len(out)} values, the limit is {MAX_AXIS} per axis")
    for v in out:
        if not math.isfinite(v) or v <= low:
            raise UserError(f"every {name} value must be a finite number > {low:g}, got {v!r}")
    return out


def phase_diagram(
    k_a: int = 5,
    k_b: int = 5,
    n_b: int = 100,
    ratios: Sequence[float] | None = None,
    lams: Sequence[float] | None = None,
    bias: bool = False,
    out: str | Path | None = None,
    max_iter: int = 50000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Minority-collapse index over a grid of lam x n_A/n_B (learnable CE, convex form).

    The plotted index is that of the centred class features h_k; the W index is returned too.
    Both use :func:`ncollapse.metrics.minority_collapse_index`, under which tail vectors that
    coincide to working precision (including tail features shrunk to the origin) have index 1.
    A cell whose convex solve did not settle within ``max_iter`` iterations has no value:
    ``null`` in the JSON grids, listed under ``"unsettled"``, and marked in the plot.

    Every argument is checked before the first solve; ``progress(done, total)`` is called after
    each row of the grid. Writes a PNG to ``out`` (when given) with the theoretical boundary
    ``lam = sqrt(n_B) / (K_A r n_B + K_B n_B)`` drawn over the grid.
    """
    t0 = time.perf_counter()
    ratios = _values(np.geomspace(1.25, 50, 17) if ratios is None else ratios, "ratio", 1.0)
    lams = _values(np.geomspace(1e-4, 3e-2, 33) if lams is None else lams, "lam", 0.0)
    if len(ratios) * len(lams) > MAX_CELLS:
        raise UserError(
            f"{len(ratios)} ratios x {len(lams)} lams = {len(ratios) * len(lams)} cells, above "
            f"the limit {MAX_CELLS} (about 10 ms each)"
        )
    max_iter = check_positive("max_iter", max_iter, upper=10**7, integer=True)
    png = None if out is None else _plot_path(out)
    grid_counts = []
    for r in ratios:
        n_a = max(n_b + 1, round(r * n_b))
        if n_a > MAX_COUNT:
            raise UserError(f"ratio {r:g} gives n_A = {n_a}, above the limit {MAX_COUNT:.0e}")
        grid_counts.append(check_two_group(k_a, n_a, k_b, n_b))
    tail = list(range(k_a, k_a + k_b))
    shape = (len(ratios), len(lams))
    index, index_w, spread = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    settled = np.ones(shape, dtype=bool)
    for i, counts in enumerate(grid_counts):
        for j, lam in enumerate(lams):
            st = minority_collapse_state(counts, lam, tail, bias, max_iter=max_iter)
            settled[i, j] = st["converged"]
            if st["converged"]:
                spread[i, j] = st["spread"]
                index[i, j] = st["minority_collapse_means"]
                index_w[i, j] = st["minority_collapse_w"]
        if progress is not None:
            progress((i + 1) * len(lams), shape[0] * shape[1])
    boundary = [math.sqrt(n_b) / (k_a * r * n_b + k_b * n_b) for r in ratios]

    def grid(a: np.ndarray) -> list[list[float | None]]:
        return [[None if math.isnan(v) else float(v) for v in row] for row in a]

    result = {
        "ka": k_a, "kb": k_b, "nb": n_b, "bias": bias, "ratios": ratios, "lams": lams,
        "minority_collapse_means": grid(index), "minority_collapse_w": grid(index_w),
        "minority_spread": grid(spread), "converged": settled.tolist(),
        "unsettled": [[ratios[i], lams[j]] for i, j in zip(*np.nonzero(~settled))],
        "max_iter": max_iter, "theory_boundary": boundary, "seconds": None, "png": None,
    }  # fmt: skip
    if png is not None:
        result["png"] = str(_plot_phase(result, png))
    result["seconds"] = time.perf_counter() - t0
    return result


def _plot_path(out: str | Path) -> Path:
    """Where the plot goes, checked before the first solve: a file name (``.png`` added when
    it has no extension) of a format matplotlib writes, in a folder that can be written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(out)
    if path.is_dir():
        raise UserError(
            f"--out {path} is a folder; give the plot's file name, e.g. {path / 'ufm_phase.png'}"
        )
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    formats = {"png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps"}
    formats &= set(FigureCanvasAgg.get_supported_filetypes())  # pgf would need LaTeX
    if path.suffix[1:].lower() not in formats:
        raise UserError(
            f"--out {path}: matplotlib cannot write a {path.suffix} file; give a name ending in "
            f".png (or {', '.join('.' + f for f in sorted(formats) if f != 'png')})"
        )
    check_output_folder(path.parent, "--out", "give --out a file in another folder")
    if path.exists() and not path.is_file():
        raise UserError(f"--out {path} is not a regular file; give another file name")
    return path


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges on a log axis: geometric midpoints, extended by half a step at both ends."""
    c = np.log(centres)
    if len(c) == 1:
        return np.exp(np.array([c[0] - 0.1, c[0] + 0.1]))
    mid = (c[1:] + c[:-1]) / 2
    return np.exp(np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]]))


def _plot_phase(res: dict[str, Any], path: Path) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lams = np.asarray(res["lams"])
    ratios = np.asarray(res["ratios"])
    li, ri = np.argsort(lams), np.argsort(ratios)
    lams, ratios = lams[li], ratios[ri]
    index = np.array(res["minority_collapse_means"], dtype=float)[np.ix_(ri, li)]
    spread = np.array(res["minority_spread"], dtype=float)[np.ix_(ri, li)]
    settled = np.asarray(res["converged"], dtype=bool)[np.ix_(ri, li)]
    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.55")
    mesh = ax.pcolormesh(_edges(lams), _edges(ratios), np.ma.masked_invalid(index), cmap=cmap,
                         vmin=0, vmax=1, shading="flat")  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="minority-collapse index of the class features (1 = collapsed)")
    if len(lams) > 1 and len(ratios) > 1 and settled.all():
        collapsed = (spread < 1e-6).astype(float)
        ax.contour(lams, ratios, collapsed, levels=[0.5], colors="white", linewidths=1.0,
                   linestyles="dotted")  # fmt: skip
        ax.plot([], [], color="white", ls="dotted", label="measured: tail logits coincide")
    fine = np.geomspace(ratios.min(), ratios.max(), 200)
    theory = np.sqrt(res["nb"]) / (res["ka"] * fine * res["nb"] + res["kb"] * res["nb"])
    ax.plot(theory, fine, "r-", lw=2, label=r"theory $\lambda = \sqrt{n_B}/N$")
    if not settled.all():
        rr, ll = np.nonzero(~settled)
        ax.plot(lams[ll], ratios[rr], "kx", ms=6, label="solver did not settle (no value)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\lambda = 2\sqrt{\lambda_W \lambda_H}$")
    ax.set_ylabel(r"$n_A / n_B$")
    ax.set_title(
        f"UFM minority collapse, learnable CE{' + bias' if res['bias'] else ''} "
        f"(K_A={res['ka']}, K_B={res['kb']}, n_B={res['nb']})",
        fontsize=10,
    )
    ax.legend(loc="lower left", fontsize=8, facecolor="0.85")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower())
    atomic_write_bytes(make_output_folder(path.parent) / path.name, buffer.getvalue())
    return path
