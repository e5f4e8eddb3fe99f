"""A sweep's results: one record per finished cell (read through :class:`ncollapse.rundir.Run`),
mean and standard deviation over seeds per (method, imbalance), and results.md / results.csv."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..metrics.accuracy import balanced_accuracy
from ..rundir import Run, atomic_write_bytes
from .spec import SPEC_FILE, cell_name, load_spec_record, ratio_label

__all__ = [
    "ACC_KEYS",
    "COLLAPSE_KEYS",
    "EARLY_KEYS",
    "EARLY_SHARES",
    "METRIC_KEYS",
    "aggregate",
    "collect",
    "format_markdown",
    "missing_cells",
    "read_spec",
    "write_results",
]

#: final-epoch accuracy keys of ``summary["final"]`` (fractions in [0, 1])
ACC_KEYS = ("acc", "many", "medium", "few", "many_idx", "medium_idx", "few_idx")
#: collapse metrics from ``summary["collapse"]["train"]`` (the classifier of an ETF run is the frame)
COLLAPSE_KEYS = (
    "nc1",
    "nc2_etf_error",
    "w_etf_error",
    "nc3",
    "minority_collapse_means",
    "minority_collapse_w",
)
#: shares of the schedule at which the validation accuracy is reported, where the run measured it
#: then (``eval.every``): how fast a method gets there (``val_acc_at_10`` = after 10 % of the epochs)
EARLY_SHARES = (10, 30)
EARLY_KEYS = tuple(f"val_acc_at_{p}" for p in EARLY_SHARES)
METRIC_KEYS = (
    *ACC_KEYS,
    "val_acc",
    *EARLY_KEYS,
    *COLLAPSE_KEYS,
    "train_seconds",
    "wall_seconds",
)


def read_spec(out_dir: str | Path) -> dict[str, Any]:
    """The grid recorded in ``out_dir/sweep.json``; UserError when it is not a sweep directory."""
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{Path(out_dir)} is not a sweep directory: it has no {SPEC_FILE}")
    return load_spec_record(path)


def _cells(spec_json: dict[str, Any]) -> list[tuple[str, float, int]]:
    return [
        (m, r, s)
        for r in spec_json["imbalance"]
        for m in spec_json["methods"]
        for s in spec_json["seeds"]
    ]


def missing_cells(out_dir: str | Path, spec_json: dict[str, Any]) -> list[str]:
    """The cells of the grid without a finished run."""
    out = Path(out_dir)
    return [
        cell_name(m, r, s)
        for m, r, s in _cells(spec_json)
        if Run(out / cell_name(m, r, s)).status() != "done"
    ]


def collect(out_dir: str | Path, spec_json: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per finished cell-seed of the grid: method, imbalance, seed, run_dir, the
    metrics of :data:`METRIC_KEYS` (None where the summary has none), head, loss, class counts."""
    out = Path(out_dir)
    records = []
    for m, r, s in _cells(spec_json):
        run = Run(out / cell_name(m, r, s))
        summary = run.summary()
        if summary is None:
            continue
        final = summary.get("final", {})
        coll = summary.get("collapse", {}).get("train", {})
        rec: dict[str, Any] = {
            "method": m,
            "imbalance": r,
            "ratio": ratio_label(r),
            "seed": s,
            "run_dir": str(run.path),
            "epochs": summary.get("epochs"),
        }
        for k in ACC_KEYS:
            rec[k] = final.get(k)
        val = summary.get("val")  # runs with data.val set: class-balanced, what to select on
        rec["val_acc"] = _class_balanced(val) if val else None
        rec.update(early_val_accuracy(run, summary.get("epochs")))
        for k in COLLAPSE_KEYS:
            rec[k] = coll.get(k)
        rec["train_seconds"] = summary.get("train_seconds")
        rec["wall_seconds"] = summary.get("wall_seconds")  # absent from older runs
        cfg = run.raw_config()
        try:
            rec["head"] = cfg["model"]["head"]
            rec["loss"] = cfg["loss"]["name"]
            rec["data"] = cfg["data"]["name"]
            rec["subset_seed"] = cfg["data"]["subset_seed"]
        except (KeyError, TypeError):
            pass
        try:
            rec["class_counts"] = run.data()["class_counts"]
        except (UserError, KeyError):
            pass
        records.append(rec)
    return records


def _class_balanced(record: dict[str, Any]) -> float | None:
    """The class-balanced accuracy of a record (its ``bal_acc``, or the mean of its per-class
    accuracies); a record with neither gives its ``acc``."""
    bal = balanced_accuracy(record)
    return bal if bal is not None else record.get("acc")


def early_val_accuracy(run: Run, epochs: int | None) -> dict[str, float | None]:
    """Validation accuracy after each share of :data:`EARLY_SHARES` of the schedule (epoch
    ``round(share * epochs / 100)``, at least 1), None where the run did not measure it then."""
    out: dict[str, float | None] = dict.fromkeys(EARLY_KEYS)
    if not epochs:
        return out
    try:
        records = run.metrics()
    except (UserError, OSError):
        return out
    val = {
        r.get("epoch"): _class_balanced(r)
        for r in records
        if r.get("kind") == "eval" and r.get("split") == "val"
    }
    for share, key in zip(EARLY_SHARES, EARLY_KEYS):
        out[key] = val.get(max(1, math.floor(share * epochs / 100 + 0.5)))
    return out


def _same_factor(a: float | None, b: float | None) -> bool:
    return a is b if a is None or b is None else math.isclose(a, b)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)  # ddof = 1
    return mean, math.sqrt(var)


def aggregate(records: list[dict[str, Any]], spec_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (imbalance, method) of the grid, in grid order: ``n`` finished seeds, ``seeds``, and
    ``<metric>_mean`` / ``<metric>_std`` for every metric of :data:`METRIC_KEYS` (std over seeds
    with ddof = 1; None with fewer than two seeds or no values). A cell with no finished seed
    appears with n = 0 and None values."""
    rows = []
    for r in spec_json["imbalance"]:
        for m in spec_json["methods"]:
            recs = [x for x in records if x["method"] == m and _same_factor(x["imbalance"], r)]
            first = recs[0] if recs else {}
            row: dict[str, Any] = {
                "method": m,
                "head": first.get("head"),
                "loss": first.get("loss"),
                "imbalance": r,
                "ratio": ratio_label(r),
                "n": len(recs),
                "seeds": [x["seed"] for x in recs],
                "subset_seed": first.get("subset_seed", spec_json.get("subset_seed")),
                "epochs": first.get("epochs"),
            }
            for k in METRIC_KEYS:
                row[f"{k}_mean"], row[f"{k}_std"] = _mean_std([x.get(k) for x in recs])
            row["class_counts"] = first.get("class_counts")
            rows.append(row)
    return rows


CSV_COLUMNS = [
    "method",
    "head",
    "loss",
    "imbalance",
    "ratio",
    "subset_seed",
    "epochs",
    "n",
    "seeds",
    *[f"{k}_{s}" for k in METRIC_KEYS for s in ("mean", "std")],
]

#: Markdown columns: (title, metric key, shown as percent)
MD_COLUMNS = [
    ("overall", "acc", True),
    ("many", "many", True),
    ("medium", "medium", True),
    ("few", "few", True),
    ("head idx", "many_idx", True),
    ("mid idx", "medium_idx", True),
    ("tail idx", "few_idx", True),
    ("val", "val_acc", True),
    ("val @10%", "val_acc_at_10", True),
    ("val @30%", "val_acc_at_30", True),
    ("NC1", "nc1", False),
    ("NC2 means", "nc2_etf_error", False),
    ("NC2 W", "w_etf_error", False),
    ("NC3", "nc3", False),
    ("MC means", "minority_collapse_means", False),
    ("MC W", "minority_collapse_w", False),
    ("train s", "train_seconds", None),
    ("wall s", "wall_seconds", None),
]


def _fmt(mean: float | None, std: float | None, kind: bool | None) -> str:
    if mean is None:
        return "n/a"
    if kind is True:
        f = lambda x: f"{100 * x:.2f}"  # noqa: E731
    elif kind is None:
        f = lambda x: f"{x:.1f}"  # noqa: E731
    else:
        f = lambda x: f"{x:.3f}"  # noqa: E731
    return f(mean) if std is None else f"{f(mean)} ± {f(std)}"


def format_markdown(rows: list[dict[str, Any]], spec_json: dict[str, Any]) -> str:
    """The results table (and a header naming the recipe, data and what the numbers mean)."""
    recipe = spec_json.get("recipe") or "digits (embedded default data)"
    epochs = spec_json.get("epochs")
    ep = next((r["epochs"] for r in rows if r.get("epochs")), None)
    lines = [
        f"# Sweep: {recipe}",
        "",
        f"- methods: {', '.join(spec_json['methods'])}; imbalance ratios: "
        f"{', '.join(spec_json['imbalance_ratio'])}; seeds: "
        f"{', '.join(map(str, spec_json['seeds']))}",
        f"- epochs: {ep if ep is not None else '?'}"
        + (" (schedule scaled with --epochs)" if epochs is not None else " (the recipe's)")
        + f"; long-tail subset seed {spec_json.get('subset_seed')} (fixed: every seed trains on "
        "the same subset; seeds vary initialisation and data order)",
    ]
    if spec_json.get("overrides"):
        lines.append(f"- overrides: {' '.join(spec_json['overrides'])}")
    counts = {}
    for r in rows:
        if r.get("class_counts") and r["ratio"] not in counts:
            counts[r["ratio"]] = r["class_counts"]
    for ratio, c in counts.items():
        lines.append(f"- imbalance ratio {ratio}: training class counts {c}")
    walls = [
        r["wall_seconds_mean"] * r["n"] for r in rows if r.get("wall_seconds_mean") is not None
    ]
    if walls:
        runs = sum(r["n"] for r in rows if r.get("wall_seconds_mean") is not None)
        total = sum(walls)
        lines.append(
            f"- wall time: {total / 3600:.2f} h summed over {runs} finished runs "
            f"({total / 60:.1f} min; runs in parallel processes overlap)"
        )
    # the validation columns only when some run measured the validation split (data.val) then
    optional = ("val_acc", *EARLY_KEYS)
    columns = [
        c for c in MD_COLUMNS if c[1] not in optional or any(r.get(f"{c[1]}_mean") for r in rows)
    ]
    lines += [
        "",
        "| method | IR | seeds | " + " | ".join(t for t, _, _ in columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    n_total = len(spec_json["seeds"])
    for r in rows:
        cells = [_fmt(r[f"{k}_mean"], r[f"{k}_std"], kind) for _, k, kind in columns]
        lines.append(
            f"| {r['method']} | {r['ratio']} | {r['n']}/{n_total} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Mean ± sample standard deviation (ddof = 1) over the finished seeds; a single seed shows "
        "the mean alone (no standard deviation). Accuracy in % at the final epoch on the balanced "
        "test set; many/medium/few by training count (> 100 / 20-100 / < 20; n/a: no class in "
        "the group); head/mid/tail idx by class index, the official CIFAR tables' split (K = 10: "
        "[0,3) / [3,7) / [7,10); K = 100: [0,36) / [36,71) / [71,100); else thirds), only where "
        "the classes are sorted by training count; val = "
        "accuracy on the validation split (data.val), where measured, at the final epoch and "
        "(val @10%, @30%) after 10 % and 30 % of the epochs (runs with eval.every), class-balanced (the mean of the per-class accuracies: a long-tailed validation set would otherwise weigh its large classes most). Collapse metrics on the training set at the final epoch (docs/metrics.md): "
        "NC1 = tr(Sigma_W Sigma_B^+)/K; NC2 = ETF error of the centred class means and of the "
        "classifier rows (for ETF heads the classifier is the fixed frame); NC3 = self-duality; "
        "MC = minority-collapse index of the tail-class means and classifier rows (0: ETF, 1: "
        "collapsed). train s = training wall-clock seconds per run (evaluation excluded); wall s = "
        "the whole run (training, the per-epoch test evaluation and the collapse metrics).",
    ]
    return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(map(str, v))
    return v


def write_results(
    out_dir: str | Path, spec_json: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rebuild ``results.csv`` and ``results.md`` in ``out_dir`` from the run directories'
    summaries (the grid read from ``sweep.json`` unless given); returns the rows."""
    out = Path(out_dir)
    if spec_json is None:
        spec_json = read_spec(out)
    rows = aggregate(collect(out, spec_json), spec_json)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "results.md", format_markdown(rows, spec_json).encode())
    return rows
