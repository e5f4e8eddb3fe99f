"""A grid of runs (methods x imbalance ratios x seeds) on one recipe, with a results table.

The sweep directory holds

    sweep.json      the grid and the settings every cell shares (recipe, epochs, --set, subset seed)
    <method>-ir<ratio>-s<seed>/   one ordinary run directory per cell and seed
    results.csv     per (method, imbalance): mean and standard deviation over the finished seeds
    results.md      the same as a Markdown table

Cells run one after another and the sweep is resumable: a run directory with ``summary.json``
is finished and never retrained, one with ``checkpoint.pt`` is resumed from it, and one with
neither (interrupted during its first epoch) is started afresh. ``results.*`` are rewritten
after every finished cell, so partial results are visible while the sweep runs.

Several sweep processes may work on one directory at once (the same command started in two
terminals, or one per GPU): a process claims a cell with a lock file ``.<cell>.lock`` before
training it and skips cells another live process holds, so no cell is trained twice.

Rerunning into the same directory with other *axes* (methods, imbalance ratios, seeds) extends
or narrows the grid: cells already trained are reused, new ones run, and the results cover the
grid asked for now (run directories outside it stay on disk, untouched). Other *settings*
(recipe, epochs, ``--set`` overrides, subset seed) would mix incomparable runs, so the sweep
refuses and lists the differences; use another output directory.

The method presets are :data:`ncollapse.build.METHODS`, the single source of truth.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import (
    Config,
    config_diff,
    config_to_dict,
    digits_defaults,
    load_config,
    scale_schedule,
)
from .errors import UserError

__all__ = [
    "ACC_KEYS",
    "COLLAPSE_KEYS",
    "SweepSpec",
    "aggregate",
    "cell_name",
    "collect",
    "format_markdown",
    "parse_imbalance",
    "parse_methods",
    "parse_seeds",
    "run_sweep",
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
METRIC_KEYS = (*ACC_KEYS, *COLLAPSE_KEYS, "train_seconds", "wall_seconds")

#: config keys the sweep sets for every cell; a ``--set`` of one of them is refused
CONTROLLED = {
    "seed": "--seeds",
    "data.imbalance": "--imbalance",
    "data.subset_seed": "--subset-seed",
    "run.out_dir": "--out",
    "run.name": "(the cell name)",
    "name": "(the cell name)",
    "optim.epochs": "--epochs",
}
#: ``--set`` keys that change where/how cells run, not what they compute (free between reruns)
HOW_TO_RUN = (
    "run.device",
    "run.progress",
    "run.threads",
    "run.amp",
    "run.tensorboard",
    "run.channels_last",
)
#: settings shared by all cells; a rerun into the same directory must keep them
SETTINGS = ("recipe", "epochs", "subset_seed", "overrides")

SPEC_FILE = "sweep.json"


# ------------------------------------------------------------------ parsing the grid


def _split(text: str | Sequence[Any]) -> list[str]:
    if isinstance(text, str):
        return [t.strip() for t in text.split(",") if t.strip()]
    return [str(t).strip() for t in text if str(t).strip()]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Comma-separated method presets, checked against :data:`ncollapse.build.METHODS`."""
    from .build import method_overrides

    methods = _split(text)
    if not methods:
        raise UserError("--methods is empty; give e.g. --methods ce,etf_dr")
    for m in methods:
        method_overrides(m)  # ConfigError with a did-you-mean
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods lists a method twice: {','.join(methods)}")
    return methods


def parse_imbalance(text: str | Sequence[Any]) -> list[float]:
    """Imbalance values as factors r in (0, 1]: a value > 1 is an imbalance *ratio* (100 -> r =
    0.01), a value in (0, 1] is already a factor (0.01 stays 0.01)."""
    out: list[float] = []
    for item in _split(text):
        try:
            v = float(item)
        except ValueError:
            raise UserError(
                f"--imbalance takes numbers (ratios like 100,10 or factors like 0.01,0.1), got {item!r}"
            ) from None
        if not math.isfinite(v) or v <= 0:
            raise UserError(
                f"--imbalance values must be > 0 (a ratio > 1 such as 100, or a factor in (0, 1] "
                f"such as 0.01), got {item!r}"
            )
        r = 1.0 / v if v > 1 else v
        r = float(f"{r:.12g}")  # 1/100 -> 0.01 exactly as written
        if any(math.isclose(r, o) for o in out):
            raise UserError(f"--imbalance lists imbalance factor {r:g} twice")
        out.append(r)
    if not out:
        raise UserError("--imbalance is empty; give e.g. --imbalance 100,10")
    return out


def parse_seeds(text: str | Sequence[Any]) -> list[int]:
    """Comma-separated training seeds (integers, no repeats)."""
    out: list[int] = []
    for item in _split(text):
        try:
            out.append(int(item))
        except ValueError:
            raise UserError(f"--seeds takes integers such as 0,1,2, got {item!r}") from None
    if not out:
        raise UserError("--seeds is empty; give e.g. --seeds 0,1,2")
    if len(set(out)) != len(out):
        raise UserError(f"--seeds lists a seed twice: {','.join(map(str, out))}")
    return out


def ratio_label(factor: float) -> str:
    """``0.01 -> '100'``: the imbalance ratio 1/r, as short as it is exact."""
    return f"{1.0 / factor:.6g}"


def cell_name(method: str, factor: float, seed: int) -> str:
    """Run directory name of one cell and seed: ``<method>-ir<ratio>-s<seed>``."""
    return f"{method}-ir{ratio_label(factor)}-s{seed}"


# ------------------------------------------------------------------ the grid


@dataclasses.dataclass
class SweepSpec:
    """What a sweep runs. ``recipe`` None means the embedded digits data; ``imbalance`` holds
    factors r (None: the recipe's own); ``subset_seed`` None keeps the recipe's."""

    methods: list[str]
    seeds: list[int]
    imbalance: list[float] | None = None
    recipe: str | None = None
    epochs: int | None = None
    subset_seed: int | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    device: str | None = None
    progress: str | None = None

    def recipe_label(self) -> str:
        return Path(self.recipe).stem if self.recipe else "digits"

    def _base_config(self, method: str) -> Config:
        from .build import method_overrides
        from .config import find_config

        path = find_config(self.recipe) if self.recipe else None
        base = None if path else digits_defaults()
        return load_config(
            path, overrides=list(self.overrides), base=base, extra=method_overrides(method)
        )

    def resolve(self) -> SweepSpec:
        """Checked copy with the recipe's defaults filled in (imbalance, subset seed)."""
        methods = parse_methods(self.methods)
        seeds = parse_seeds(self.seeds)
        for text in self.overrides:
            key = text.split("=", 1)[0].strip()
            if key in CONTROLLED:
                raise UserError(
                    f"the sweep sets '{key}' for every cell; use {CONTROLLED[key]} instead of --set {text}"
                )
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        base = self._base_config(methods[0])
        imbalance = (
            parse_imbalance(self.imbalance) if self.imbalance is not None else [base.data.imbalance]
        )
        subset = base.data.subset_seed if self.subset_seed is None else int(self.subset_seed)
        return dataclasses.replace(
            self, methods=methods, seeds=seeds, imbalance=imbalance, subset_seed=subset
        )

    def cells(self) -> list[tuple[float, int, str]]:
        """(imbalance factor, seed, method) in run order: per imbalance, seed 0 of every method
        first, so an interrupted sweep already compares the methods."""
        assert self.imbalance is not None
        return [(r, s, m) for r in self.imbalance for s in self.seeds for m in self.methods]

    def cell_config(self, method: str, factor: float, seed: int, out_dir: Path) -> Config:
        """The full config of one cell: recipe (digits defaults without one), method preset,
        ``--set`` overrides, the cell's seed/imbalance/subset seed, then the shortened schedule."""
        from .build import method_overrides
        from .config import find_config

        path = find_config(self.recipe) if self.recipe else None
        base = None if path else digits_defaults()
        name = cell_name(method, factor, seed)
        extra: dict[str, Any] = {k: dict(v) for k, v in method_overrides(method).items()}
        extra["name"] = name
        sets = [
            *self.overrides,
            f"seed={seed}",
            f"data.imbalance={factor!r}",
            f"data.subset_seed={self.subset_seed}",
            f"run.out_dir={out_dir}",
            f"run.name={name}",
        ]
        if self.device is not None:
            sets.append(f"run.device={self.device}")
        if self.progress is not None:
            sets.append(f"run.progress={self.progress}")
        cfg = load_config(path, overrides=sets, base=base, extra=extra)
        if self.epochs is not None:
            cfg = scale_schedule(cfg, self.epochs)
        return cfg

    def to_json(self) -> dict[str, Any]:
        assert self.imbalance is not None
        return {
            "recipe": self.recipe,
            "epochs": self.epochs,
            "subset_seed": self.subset_seed,
            "overrides": [o for o in self.overrides if not o.strip().startswith(HOW_TO_RUN)],
            "methods": list(self.methods),
            "imbalance": list(self.imbalance),
            "imbalance_ratio": [ratio_label(r) for r in self.imbalance],
            "seeds": list(self.seeds),
            "cells": [cell_name(m, r, s) for r, s, m in self.cells()],
        }


def _check_spec(path: Path, new: dict[str, Any]) -> list[str]:
    """Refuse a rerun whose shared settings differ; return notes on changed axes."""
    old = json.loads(path.read_text())
    diff = [
        f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
        for k in SETTINGS
        if old.get(k) != new.get(k)
    ]
    if diff:
        raise UserError(
            f"{path.parent} holds a sweep with other settings; its runs would not be comparable:\n  "
            + "\n  ".join(diff)
            + "\n(choose another --out, or rerun with the same settings; methods, imbalance and "
            "seeds may change freely)"
        )
    notes = []
    for k in ("methods", "imbalance_ratio", "seeds"):
        added = [x for x in new[k] if x not in old.get(k, [])]
        dropped = [x for x in old.get(k, []) if x not in new[k]]
        if added or dropped:
            notes.append(
                f"{k}: "
                + ", ".join(
                    p
                    for p in (
                        f"adding {','.join(map(str, added))}" if added else "",
                        f"leaving out {','.join(map(str, dropped))} (their runs stay on disk)"
                        if dropped
                        else "",
                    )
                    if p
                )
            )
    return notes


# ------------------------------------------------------------------ running


def _say(msg: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(msg)


def _cell_state(run_dir: Path) -> str:
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "checkpoint.pt").is_file():
        return "resume"
    if run_dir.exists():
        return "stale"
    return "new"


def _lock_path(out: Path, name: str) -> Path:
    return out / f".{name}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _claim_cell(out: Path, name: str) -> tuple[Path | None, dict[str, Any] | None]:
    """Claim a cell for this process: ``(lock path, None)``, or ``(None, holder)`` when another
    live process holds it. A lock left by a dead process on this host is taken over; one from
    another host is trusted (its holder cannot be checked from here)."""
    path = _lock_path(out, name)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if not holder:  # being written this instant, or vanished: look again
                continue
            if holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1))):
                path.unlink(missing_ok=True)  # its process died (a kill, a lost shell)
                continue
            return None, holder
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me) + "\n")
        return path, None
    return None, {"host": "?", "pid": "?", "lock": str(path)}


def _check_cell_config(run_dir: Path, cfg: Config) -> None:
    """A finished cell must have been trained with the config asked for now."""
    from .engine.rundir import RunDir
    from .runner import RESUME_FREE

    saved = RunDir(run_dir).read_config_dict()
    diff = [d for d in config_diff(saved, config_to_dict(cfg)) if not d.startswith(RESUME_FREE)]
    if diff:
        raise UserError(
            f"the finished run {run_dir} was trained with another config than this sweep asks for "
            "(was the recipe file edited?):\n  "
            + "\n  ".join(diff)
            + "\n(choose another --out, or delete that run directory to retrain it)"
        )


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path | None = None,
    *,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run (or continue) the grid of ``spec`` in ``out_dir`` (default ``runs/sweep-<recipe>``),
    rewriting ``results.csv``/``results.md`` after every finished cell. Returns
    ``{"out_dir", "spec", "rows", "ran", "resumed", "skipped", "busy"}`` with ``rows`` from
    :func:`aggregate` and ``busy`` the cells other processes were training (left to them)."""
    from .data import load_data
    from .runner import run_training

    spec = spec.resolve()
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"sweep-{spec.recipe_label()}"
    out.mkdir(parents=True, exist_ok=True)
    spec_json = spec.to_json()
    spec_path = out / SPEC_FILE
    if spec_path.is_file():
        for note in _check_spec(spec_path, spec_json):
            _say(f"sweep: grid changed, {note}", log)
    from .engine.rundir import atomic_write_bytes

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {**spec_json, "updated": now}
    if spec_path.is_file():
        record["created"] = json.loads(spec_path.read_text()).get("created", now)
    else:
        record["created"] = now
    atomic_write_bytes(spec_path, (json.dumps(record, indent=2) + "\n").encode())

    cells = spec.cells()
    configs = {(r, s, m): spec.cell_config(m, r, s, out) for r, s, m in cells}
    ran, resumed, skipped, busy = [], [], [], []
    for r, s, m in cells:
        name = cell_name(m, r, s)
        if _cell_state(out / name) == "done":
            _check_cell_config(out / name, configs[(r, s, m)])
    write_results(out, spec_json)

    bundle, bundle_key = None, None
    for i, (r, s, m) in enumerate(cells, 1):
        name = cell_name(m, r, s)
        cfg = configs[(r, s, m)]
        run_dir = out / name
        tag = f"[{i}/{len(cells)}] {name}"
        if _cell_state(run_dir) == "done":
            skipped.append(name)
            _say(f"sweep: {tag}: finished earlier, skipped", log)
            continue
        lock, holder = _claim_cell(out, name)
        if lock is None:
            busy.append(name)
            _say(
                f"sweep: {tag}: being trained by process {holder.get('pid')} on "
                f"{holder.get('host')}, left to it (if no such process runs, delete "
                f"{_lock_path(out, name)})",
                log,
            )
            continue
        try:
            state = _cell_state(run_dir)  # again, now that it is ours
            if state == "done":  # another process finished it meanwhile
                skipped.append(name)
                _say(f"sweep: {tag}: finished by another process, skipped", log)
                continue
            if state == "stale":  # interrupted before its first checkpoint: nothing to keep
                shutil.rmtree(run_dir)
            key = json.dumps(config_to_dict(cfg.data), sort_keys=True)
            if key != bundle_key:
                bundle = None  # free the previous data before loading the next
                bundle = load_data(cfg.data)
                bundle_key = key
            if state == "resume":
                _say(f"sweep: {tag}: resuming from its checkpoint", log)
                run_training(cfg, resume=run_dir, bundle=bundle, prefix=f"{tag} ")
                resumed.append(name)
            else:
                _say(f"sweep: {tag}: training", log)
                run_training(cfg, bundle=bundle, prefix=f"{tag} ")
                ran.append(name)
        finally:
            lock.unlink(missing_ok=True)
        write_results(out, spec_json)
    rows = write_results(out, spec_json)
    if busy:
        _say(
            f"sweep: {len(busy)} cell(s) were being trained by other processes; results.* cover "
            "them once those finish (rerun this command to rebuild the tables)",
            log,
        )
    return {
        "out_dir": str(out),
        "spec": spec_json,
        "rows": rows,
        "ran": ran,
        "resumed": resumed,
        "skipped": skipped,
        "busy": busy,
    }


# ------------------------------------------------------------------ results


def collect(out_dir: str | Path, spec_json: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per finished cell-seed of the grid: method, imbalance, seed, run_dir, the
    metrics of :data:`METRIC_KEYS` (None where the summary has none), head, loss, class counts."""
    out = Path(out_dir)
    records = []
    for r in spec_json["imbalance"]:
        for m in spec_json["methods"]:
            for s in spec_json["seeds"]:
                run_dir = out / cell_name(m, r, s)
                summ_path = run_dir / "summary.json"
                if not summ_path.is_file():
                    continue
                summary = json.loads(summ_path.read_text())
                final = summary.get("final", {})
                coll = summary.get("collapse", {}).get("train", {})
                rec: dict[str, Any] = {
                    "method": m,
                    "imbalance": r,
                    "ratio": ratio_label(r),
                    "seed": s,
                    "run_dir": str(run_dir),
                    "epochs": summary.get("epochs"),
                }
                for k in ACC_KEYS:
                    rec[k] = final.get(k)
                for k in COLLAPSE_KEYS:
                    rec[k] = coll.get(k)
                rec["train_seconds"] = summary.get("train_seconds")
                rec["wall_seconds"] = summary.get("wall_seconds")  # absent from older runs
                try:
                    cfg = _read_yaml(run_dir / "config.yaml")
                    rec["head"] = cfg["model"]["head"]
                    rec["loss"] = cfg["loss"]["name"]
                    rec["data"] = cfg["data"]["name"]
                    rec["subset_seed"] = cfg["data"]["subset_seed"]
                except (OSError, KeyError, TypeError):
                    pass
                try:
                    rec["class_counts"] = json.loads((run_dir / "data.json").read_text())[
                        "class_counts"
                    ]
                except (OSError, KeyError, ValueError):
                    pass
                records.append(rec)
    return records


def _read_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


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
            recs = [x for x in records if x["method"] == m and math.isclose(x["imbalance"], r)]
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
    lines += [
        "",
        "| method | IR | seeds | " + " | ".join(t for t, _, _ in MD_COLUMNS) + " |",
        "|---|---:|---:|" + "---:|" * len(MD_COLUMNS),
    ]
    n_total = len(spec_json["seeds"])
    for r in rows:
        cells = [_fmt(r[f"{k}_mean"], r[f"{k}_std"], kind) for _, k, kind in MD_COLUMNS]
        lines.append(
            f"| {r['method']} | {r['ratio']} | {r['n']}/{n_total} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Mean ± sample standard deviation (ddof = 1) over the finished seeds; a single seed shows "
        "the mean alone (no standard deviation). Accuracy in % at the final epoch on the balanced "
        "test set; many/medium/few by training count (> 100 / 20-100 / < 20; n/a: no class in "
        "the group); head/mid/tail idx by class index, the official CIFAR tables' split (K = 10: "
        "[0,3) / [3,7) / [7,10); K = 100: [0,36) / [36,71) / [71,100); else thirds). Collapse metrics on the training set at the final epoch (SPEC section 6): "
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
    ``summary.json`` (the grid read from ``sweep.json`` unless given); returns the rows."""
    from .engine.rundir import atomic_write_bytes

    out = Path(out_dir)
    if spec_json is None:
        spec_path = out / SPEC_FILE
        if not spec_path.is_file():
            raise UserError(f"{out} is not a sweep directory: it has no {SPEC_FILE}")
        spec_json = json.loads(spec_path.read_text())
    rows = aggregate(collect(out, spec_json), spec_json)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "results.md", format_markdown(rows, spec_json).encode())
    return rows
