"""The analysis of run directories: their plots and ``analysis.md``, a markdown summary of each
run's last accuracy and neural-collapse records, with a note for a run that has not finished or
measured collapse only once (``ncollapse analyze RUN [RUN ...]``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import UserError
from ..folders import check_output_folder, make_output_folder
from .plots import collapse_epochs, plot_collapse_curves, plot_cosine_matrices, plot_per_class
from .runs import Run, read_run

__all__ = ["analyze_runs", "single_point_note", "unfinished_note"]

SUMMARY_KEYS = (
    "nc1",
    "cdnv",
    "nc2_etf_error",
    "w_etf_error",
    "nc3",
    "nc4",
    "minority_collapse_means",
    "minority_collapse_w",
)
ACC_KEYS = ("acc", "bal_acc", "many", "medium", "few", "many_idx", "medium_idx", "few_idx")


def run_progress(run: Run) -> tuple[int, int | None]:
    """``(the last epoch with records, the epochs the run was configured for)``."""
    done = max((int(r.get("epoch", 0)) for r in run.records), default=0)
    total = (run.config.get("optim") or {}).get("epochs")
    return done, None if total is None else int(total)


def unfinished(run: Run) -> bool:
    """Whether the run has not finished (no ``summary.json``)."""
    return run.summary is None


def unfinished_note(run: Run) -> str | None:
    """For a run that has not finished: how far it got, when its collapse metrics come next,
    and the command that goes on; None for a finished run."""
    if not unfinished(run):
        return None
    done, total = run_progress(run)
    of = f" of {total}" if total else ""
    epochs = collapse_epochs(run)
    every = (run.config.get("eval") or {}).get("collapse_every")
    if len(epochs) > 4:
        measured = (
            f"neural collapse measured {len(epochs)} times, epochs {epochs[0]} to {epochs[-1]}"
        )
    elif epochs:
        measured = f"neural collapse measured at epoch{'s' if len(epochs) > 1 else ''} "
        measured += ", ".join(map(str, epochs))
    else:
        measured = "neural collapse not measured yet"
    plan = (
        f" (every {every} epochs and at the end)"
        if every
        else " (at the end)"
        if every is not None
        else ""
    )
    return (
        f"{run.name} has not finished: epoch {done}{of} so far, {measured}{plan}; continue it "
        f"with `ncollapse train --resume {run.path}`"
    )


def single_point_note(run: Run) -> str | None:
    """A note for a finished run whose collapse metrics were measured at most once (its
    "curves" are single points), naming the setting that measures more often; for a run that
    has not finished, what :func:`unfinished_note` says; None otherwise."""
    if unfinished(run):
        return unfinished_note(run)
    epochs = collapse_epochs(run)
    if len(epochs) > 1:
        return None
    every = (run.config.get("eval") or {}).get("collapse_every")
    when = f"only at epoch {epochs[0]}" if epochs else "never"
    why = f" (eval.collapse_every={every})" if every is not None else ""
    return (
        f"{run.name}: neural collapse was measured {when}{why}, so its curves are single "
        "points; train with --set eval.collapse_every=N to measure every N epochs"
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _run_summary(run: Run) -> dict[str, Any]:
    ev = run.last("eval", "test") or run.last("eval")
    done, total = run_progress(run)
    out: dict[str, Any] = {
        "name": run.name,
        "method": run.method,
        "path": str(run.path),
        "finished": not unfinished(run),
        "epochs": done,
        "epochs_planned": total,
        "eval": {k: ev.get(k) for k in ACC_KEYS} if ev else None,
        "eval_epoch": ev.get("epoch") if ev else None,
    }
    for split in ("train", "test"):
        rec = run.last("collapse", split)
        out[f"collapse_{split}"] = (
            {k: rec.get(k) for k in SUMMARY_KEYS if k in rec} | {"epoch": rec.get("epoch")}
            if rec
            else None
        )
    return out


def _markdown(summaries: list[dict[str, Any]], plots: list[Path], notes: Sequence[str] = ()) -> str:
    lines = ["# ncollapse analysis", ""]
    if notes:
        lines += [f"> **Note:** {note}" for note in notes] + [""]
    lines += ["## Accuracy (last evaluation, test set)", ""]
    lines += ["| run | method | epoch | " + " | ".join(ACC_KEYS) + " |"]
    lines += ["|" + "---|" * (len(ACC_KEYS) + 3)]
    for s in summaries:
        ev = s["eval"] or {}
        epoch = _fmt(s["eval_epoch"])
        if not s["finished"]:
            of = f" of {s['epochs_planned']}" if s["epochs_planned"] else ""
            epoch += f" (unfinished: {s['epochs']}{of})"
        lines.append(
            f"| {s['name']} | {s['method']} | {epoch} | "
            + " | ".join(_fmt(ev.get(k)) for k in ACC_KEYS)
            + " |"
        )
    lines += [
        "",
        "acc: image-weighted; bal_acc: class-balanced (the mean of the per-class accuracies); "
        "many/medium/few: by training count (>100, 20–100, <20); *_idx: by class-index range, "
        "only where the classes are sorted by training count (CIFAR-LT).",
        "",
        "## Neural collapse (last measured epoch)",
        "",
    ]
    lines += ["| run | split | epoch | " + " | ".join(SUMMARY_KEYS) + " |"]
    lines += ["|" + "---|" * (len(SUMMARY_KEYS) + 3)]
    for s in summaries:
        for split in ("train", "test"):
            rec = s[f"collapse_{split}"]
            if rec:
                lines.append(
                    f"| {s['name']} | {split} | {_fmt(rec.get('epoch'))} | "
                    + " | ".join(_fmt(rec.get(k)) for k in SUMMARY_KEYS)
                    + " |"
                )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def analyze_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> dict:
    """Read one or two (or more) run directories; write plots and ``analysis.md``.

    Output goes to ``out_dir``; by default into the run directory itself for one run, and into
    ``<first run>/compare_<second run name>/`` for an overlay. Returns a JSON-ready dict with
    the per-run summaries and the files written.
    """
    if not run_dirs:
        raise UserError("give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    if out_dir is None:
        out = runs[0].path if len(runs) == 1 else runs[0].path / f"compare_{runs[1].name}"
        check_output_folder(out, "the run directory", "write the plots elsewhere with --out DIR")
    else:
        out = check_output_folder(out_dir)
    make_output_folder(out)
    plots = [
        p
        for p in (
            plot_collapse_curves(runs, out / "collapse_curves.png"),
            plot_cosine_matrices(runs, out / "cosine_matrices.png"),
            plot_per_class(runs, out / "per_class.png"),
        )
        if p is not None
    ]
    summaries = [_run_summary(r) for r in runs]
    notes = [note for note in map(single_point_note, runs) if note]
    for note in notes:  # the command line prints each as one "ncollapse: warning: ..." line
        warnings.warn(note, stacklevel=2)
    md = out / "analysis.md"
    atomic_write_bytes(md, _markdown(summaries, plots, notes).encode())
    return {
        "runs": summaries,
        "out_dir": str(out),
        "files": [str(p) for p in [*plots, md]],
        "notes": notes,
    }
