"""Running a sweep: every cell in one process, several processes sharing one directory, or
exactly one cell per invocation (a cluster job array), and listing the grid.

A process claims a cell with an operating-system file lock (``filelock``) on ``.<cell>.lock``
before training it: another process skips a locked cell, and a lock held by a process that
died is released by the operating system, so its cell is taken over by the next process. The
holder's host and pid are written beside the lock (``.<cell>.owner``) for messages.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..config import Config, complete_config_dict, config_diff, config_to_dict, is_run_key
from ..errors import UserError
from ..rundir import Run, atomic_write_bytes
from .pack import train_packs
from .results import missing_cells, write_results
from .spec import SPEC_FILE, SweepSpec, cell_name, check_spec

__all__ = ["blocked_cell", "list_cells", "run_sweep", "stale_cells"]


def _say(msg: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(msg)


class CellLock:
    """The claim on one cell: ``acquire()`` is False when another live process holds it."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / f".{name}.lock"
        self.owner_path = out / f".{name}.owner"
        self._lock = FileLock(self.path)

    def acquire(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_bytes(self.owner_path, (json.dumps(me) + "\n").encode())
        return True

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        self.owner_path.unlink(missing_ok=True)
        self._lock.release()


#: what ncollapse writes in a run directory (and the temporary files of its atomic writes)
_RUN_ENTRIES = frozenset(
    {"config.yaml", "data.json", "env.json", "metrics.jsonl", "summary.json", "checkpoint.pt",
     "model.pt", "collapse_final.npz", "tb"}
)  # fmt: skip


def _made_marker(out: Path, name: str) -> Path:
    """The mark a sweep leaves in its directory before it creates the cell ``name``: only a
    cell directory it made, holding only what a run writes, is ever deleted (an unfinished one,
    to train it again)."""
    return out / f".{name}.created"


def _ours(entry: str) -> bool:
    return entry in _RUN_ENTRIES or (entry.startswith(".") and entry.endswith(".tmp"))


def blocked_cell(out: Path, name: str) -> str | None:
    """Why the path of cell ``name`` in ``out`` is not the sweep's to train in, or None when it
    is: absent, a finished or resumable run, an empty folder, or an unfinished cell this sweep
    made. A file, a symbolic link (but to a finished run) or a folder holding anything else is
    left alone: the sweep never deletes what it did not create."""
    path = out / name
    if path.is_symlink() and Run(path).status() != "done":
        return f"{path} is a symbolic link, not a cell directory the sweep made"
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a cell directory"
    if Run(path).status() in ("done", "resumable"):
        return None
    try:
        entries = sorted(e.name for e in path.iterdir())
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    foreign = [e for e in entries if not _ours(e)]
    if foreign:
        shown = ", ".join(foreign[:4]) + (
            f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        )
        return f"{path} holds files a run does not write ({shown})"
    if entries and not _made_marker(out, name).is_file():
        return f"{path} holds an unfinished run this sweep did not make"
    return None


def _refuse_blocked(reasons: list[str]) -> None:
    if reasons:
        more = f" (and {len(reasons) - 1} more cells)" if len(reasons) > 1 else ""
        raise UserError(
            f"{reasons[0]}{more}; nothing was deleted: move it out of the sweep directory (or "
            "choose another --out) and rerun"
        )


def _make_ready(out: Path, name: str, state: str, say: Callable[[str], None]) -> None:
    """Make cell ``name``, claimed (its lock held) with status ``state``, ready to train: a
    path the sweep did not make is refused (again, now that the cell is ours); an unfinished
    cell it made, stopped before its first checkpoint, is removed; a cell to be made is marked
    (:func:`_made_marker`) before its directory is. The one-at-a-time loop and the packs
    (:mod:`.pack`) both call this."""
    _refuse_blocked([b] if (b := blocked_cell(out, name)) else [])
    path = out / name
    if state == "started" and any(path.iterdir()):
        # a cell this sweep made, stopped before its first checkpoint: nothing to keep
        say("removing its unfinished run (no checkpoint yet)")
        shutil.rmtree(path)
    if state in ("new", "started"):
        atomic_write_bytes(_made_marker(out, name), b"")


def _differences(run: Run, cfg: Config) -> list[str]:
    """How the config ``run`` was trained with differs from ``cfg``, ``run.*`` keys aside."""
    saved = complete_config_dict(run.config_dict())  # keys added since: their defaults
    return [d for d in config_diff(saved, config_to_dict(cfg)) if not is_run_key(d)]


def _check_cell_config(run: Run, cfg: Config) -> None:
    """A finished cell must have been trained with the config asked for now."""
    diff = _differences(run, cfg)
    if diff:
        raise UserError(
            f"the finished run {run.path} was trained with another config than this sweep asks "
            "for (was the recipe file edited?):\n  "
            + "\n  ".join(diff)
            + "\n(choose another --out, or delete that run directory to retrain it)"
        )


def stale_cells(out_dir: str | Path, spec_json: dict[str, Any]) -> list[str]:
    """Notes on the finished cells of a recorded grid whose run was trained with another config
    than the grid's settings give today (an edited recipe file, a run directory copied in by
    hand), one per cell with its first difference; what ``--collect`` warns about, since it
    tabulates what it finds without training. One note when the grid cannot be rebuilt at all
    (its recipe file is gone, say)."""
    out = Path(out_dir)
    try:
        spec = SweepSpec.from_json(spec_json).resolve()
        stale = []
        for r, s, m in spec.cells():
            run = Run(out / cell_name(m, r, s))
            if run.status() != "done":
                continue
            diff = _differences(run, spec.cell_config(m, r, s, out))
            if diff:
                more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
                stale.append(
                    f"{run.path} was trained with another config than the sweep's settings give "
                    f"now ({diff[0]}{more}; was the recipe file edited?): its row mixes the two"
                )
        return stale
    except (UserError, KeyError, TypeError) as exc:
        return [f"the finished runs of {out} were not checked against the sweep's settings: {exc}"]


def _prepare_dir(spec: SweepSpec, out: Path, log: Callable[[str], None] | None) -> dict[str, Any]:
    """Check ``out`` and record the grid in ``sweep.json``; returns that record."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose a directory")
    if Run.is_run(out):
        raise UserError(f"{out} is a training run's directory, not a sweep's; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the sweep directory {out}: {exc.strerror}; choose another --out"
        ) from None
    spec_json = spec.to_json()
    spec_path = out / SPEC_FILE
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {**spec_json, "updated": now, "created": now}
    if spec_path.is_file():
        for note in check_spec(spec_path, spec_json):
            _say(f"sweep: grid changed, {note}", log)
        record["created"] = json.loads(spec_path.read_text()).get("created", now)
    atomic_write_bytes(spec_path, (json.dumps(record, indent=2) + "\n").encode())
    return spec_json


def list_cells(spec: SweepSpec, out_dir: str | Path) -> list[dict[str, Any]]:
    """The grid's cells in run order, each with its index (for ``--cell``) and status."""
    spec = spec.resolve()
    out = Path(out_dir)
    cells = []
    for i, (r, s, m) in enumerate(spec.cells()):
        name = cell_name(m, r, s)
        cell = {"index": i, "cell": name, "method": m, "imbalance": r, "seed": s}
        blocked = blocked_cell(out, name)
        cell["status"] = "blocked" if blocked else Run(out / name).status()
        if blocked:
            cell["note"] = f"{blocked}: the sweep leaves it alone and refuses to run"
        cells.append(cell)
    return cells


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path | None = None,
    *,
    cell: int | str | None = None,
    log: Callable[[str], None] | None = print,
    pack: int = 1,
) -> dict[str, Any]:
    """Run (or continue) the grid of ``spec`` in ``out_dir`` (default ``runs/sweep-<recipe>``),
    rewriting ``results.csv``/``results.md`` after every finished cell; with ``cell`` (an index
    of :func:`list_cells` or a cell name) only that cell. Returns ``{"out_dir", "spec", "rows",
    "ran", "resumed", "skipped", "busy", "missing"}``; ``busy`` are the cells other processes
    were training (left to them), ``missing`` the cells of the grid not finished yet. ``pack``:
    train up to this many cells that share a network shape at a time, as one batched model
    (:mod:`.pack`)."""
    from ..data import load_data
    from ..runner import run_training

    spec = spec.resolve()
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"sweep-{spec.recipe_label()}"
    cells = spec.cells()
    if cell is not None:
        names = [cell_name(m, r, s) for r, s, m in cells]
        if isinstance(cell, str) and not cell.lstrip("-").isdigit():
            if cell not in names:
                raise UserError(f"--cell {cell!r} is not a cell of this grid (see --list)")
            cells = [cells[names.index(cell)]]
        else:
            i = int(cell)
            if not 0 <= i < len(cells):
                raise UserError(
                    f"--cell {i} is outside the grid: it has {len(cells)} cells, indices 0.."
                    f"{len(cells) - 1} (see --list)"
                )
            cells = [cells[i]]
    configs = {(r, s, m): spec.cell_config(m, r, s, out) for r, s, m in cells}  # checks all
    _refuse_blocked([b for r, s, m in configs if (b := blocked_cell(out, cell_name(m, r, s)))])
    spec_json = _prepare_dir(spec, out, log)
    for (r, s, m), cfg in configs.items():
        run = Run(out / cell_name(m, r, s))
        if run.status() == "done":
            _check_cell_config(run, cfg)
    write_results(out, spec_json)

    ran, resumed, skipped, busy = [], [], [], []
    if pack > 1:
        ran, resumed = train_packs(
            cells,
            configs,
            out,
            pack,
            lock=CellLock,
            make_ready=lambda name, state, say: _make_ready(out, name, state, say),
            load_bundle=lambda cfg: load_data(cfg.data),
            log=lambda msg: _say(msg, log),
        )
        write_results(out, spec_json)
    bundle, bundle_key = None, None
    for i, (r, s, m) in enumerate(cells, 1):
        name = cell_name(m, r, s)
        cfg = configs[(r, s, m)]
        run = Run(out / name)
        tag = f"[{i}/{len(cells)}] {name}"
        if run.status() == "done":
            if name in ran or name in resumed:  # trained in a pack just now
                continue
            skipped.append(name)
            _say(f"sweep: {tag}: finished earlier, skipped", log)
            continue
        lock = CellLock(out, name)
        if not lock.acquire():
            holder = lock.holder()
            busy.append(name)
            _say(
                f"sweep: {tag}: being trained by process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, left to it",
                log,
            )
            continue
        try:
            state = run.status()  # again, now that it is ours
            if state == "done":  # another process finished it meanwhile
                skipped.append(name)
                _say(f"sweep: {tag}: finished by another process, skipped", log)
                continue
            _make_ready(out, name, state, lambda msg, t=tag: _say(f"sweep: {t}: {msg}", log))
            key = json.dumps(config_to_dict(cfg.data), sort_keys=True)
            if key != bundle_key:
                bundle = None  # free the previous data before loading the next
                bundle = load_data(cfg.data)
                bundle_key = key
            if state == "resumable":
                _say(f"sweep: {tag}: resuming from its checkpoint", log)
                run_training(cfg, resume=run.path, bundle=bundle, prefix=f"{tag} ")
                resumed.append(name)
            else:
                _say(f"sweep: {tag}: training", log)
                run_training(cfg, bundle=bundle, prefix=f"{tag} ")
                ran.append(name)
        finally:
            lock.release()
        write_results(out, spec_json)
    rows = write_results(out, spec_json)
    if busy:
        _say(
            f"sweep: {len(busy)} cell(s) were being trained by other processes; results.* cover "
            "them once those finish (rerun this command, or --collect, to rebuild the tables)",
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
        "missing": missing_cells(out, spec_json),
    }
