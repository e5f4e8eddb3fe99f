"""The run directory: one module owns every file in it, for writing and for reading.

A run directory holds (``docs/architecture.md``, "Run directory"):

    config.yaml          the resolved config (every key)
    data.json            class names and counts, subset information, the three seeds
    env.json             versions, device, CPU features, precision, command line; resumes
    metrics.jsonl        one JSON record per line: train / eval / collapse, by epoch
    summary.json         the final result (written at the end)
    checkpoint.pt        everything a resume needs (written every run.checkpoint_every epochs)
    model.pt             the final weights (state_dict)
    collapse_final.npz   final class means and classifier, for plots (see below)
    tb/                  TensorBoard event files

Writes are atomic (a temporary file, then ``os.replace``), so an interrupted run never leaves a
half-written file behind, and an existing run is never overwritten. Trainer, runner, report and
sweep all go through :class:`Run`.

``collapse_final.npz`` is described in :mod:`ncollapse.collapse_file`. A refused command never
writes here; a damaged file is named in a one-line :class:`~ncollapse.errors.UserError`.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .atomic import atomic_write_bytes
from .collapse_file import COLLAPSE_STATE_FILE, load_collapse_state, save_collapse_state
from .errors import UserError, write_error
from .folders import check_output_folder, make_output_folder
from .jsonsafe import dumps, jsonable

__all__ = [
    "COLLAPSE_STATE_FILE",
    "Run",
    "SavedRun",
    "atomic_write_bytes",
    "check_out_dir",
    "check_output_folder",
    "check_run_name",
    "created_runs",
    "load_collapse_state",
    "make_output_folder",
    "nonfinite_tensors",
    "read_metrics",
    "save_collapse_state",
]

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"

TB_DIR = "tb"

#: what a checkpoint written by the trainer holds (a resume needs every one of them)
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scaler", "trainer", "rng")
#: the sections of ``config.yaml`` that every run has written since the first version
SECTIONS = ("data", "model", "optim")

_AGAIN = "delete it to train this run again from epoch 0 with the same --resume, or start a new run"
_CREATED: list[Run] = []  # the run directories this process made, in order (for messages)


def created_runs() -> list[Run]:
    """The run directories :meth:`Run.create` made in this process, oldest first (the CLI
    names them after an interrupt: resumable, or removed before their first checkpoint)."""
    return list(_CREATED)


def nonfinite_tensors(state: Any, prefix: str = "") -> tuple[list[str], int]:
    """``(names of the floating-point tensors holding NaN or inf, tensors looked at)`` in a
    state dict, or in a mapping of them (a checkpoint's ``model`` and ``ema``): loaded weights
    are checked as the divergence guard checks trained ones."""
    bad: list[str] = []
    seen = 0
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            seen = 1
            if not bool(torch.isfinite(state).all()):
                bad.append(prefix or "tensor")
    elif isinstance(state, dict):
        for key, value in state.items():
            b, n = nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
            bad += b
            seen += n
    return bad, seen


def _nonfinite_note(bad: list[str], seen: int) -> str:
    shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    return f"NaN or inf in {len(bad)} of its {seen} weight tensors ({shown})"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``. A torn last line (a crash while appending) is
    skipped; any other line that is not a JSON object means the file is damaged (UserError)."""
    p = Path(path)
    if not p.is_file():
        return []
    text = p.read_bytes().decode("utf-8", errors="replace")
    lines, out = [ln for ln in text.split("\n") if ln.strip()], []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        what = None
        if not isinstance(record, dict):
            if i == len(lines) - 1:
                continue  # torn by a crash while appending
            what = "is not a JSON record"
        elif "epoch" in record and (
            not isinstance(record["epoch"], int) or isinstance(record["epoch"], bool)
        ):  # every record the trainer writes counts its epoch in whole numbers
            what = f"has epoch {record['epoch']!r}, not a whole number"
        if what:
            raise UserError(
                f"{p} is damaged (line {i + 1} {what}); restore it, or delete it "
                "and the lines after the damage (the run's history is lost with them)"
            )
        out.append(record)
    return out


_NAME = re.compile(r"^[A-Za-z0-9_.+=@,-]+$")


def check_run_name(name: str) -> str:
    """A run name is a plain directory name: no path separators, not ``.`` or ``..``."""
    if not name or name in (".", "..") or not _NAME.match(name):
        raise UserError(
            f"run name {name!r} must be a plain directory name (letters, digits and . _ - + = @ ,; "
            "no '/'); choose where runs go with --out"
        )
    return name


def check_out_dir(out_dir: str | Path, name: str | None = None) -> None:
    """Refuse, before anything is loaded or made, a parent directory ``out_dir`` that cannot
    hold runs (:func:`~ncollapse.folders.check_output_folder`: a file, a path through a file, a
    place that cannot be written) and a ``name`` taken by a file. Nothing is created."""
    base = check_output_folder(out_dir, "--out")
    if name is not None:
        check_run_name(name)
        if (base / name).exists() and not (base / name).is_dir():
            raise UserError(f"{base / name} is a file, not a run directory; choose another --name")


@dataclass
class SavedRun:
    """What a resume reads from a run directory (:meth:`Run.read_saved`): the saved config (as
    written), the data record, the environment record, the metrics records and the checkpoint
    (None before the first one)."""

    run: Run
    config: dict[str, Any]
    data: dict[str, Any]
    env: dict[str, Any]
    records: list[dict[str, Any]]
    checkpoint: dict[str, Any] | None


class Run:
    """One run directory: its paths, writers and readers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --------------------------------------------------------------- creation and loading
    @classmethod
    def create(cls, out_dir: str | Path, name: str, explicit: bool) -> Run:
        """Make a new run directory ``out_dir/name``. An explicitly named one that already holds
        a run is refused (resume it instead); a derived name gets a numeric suffix."""
        check_out_dir(out_dir, name)
        base = Path(out_dir)
        path = base / name
        if path.exists() and any(path.iterdir()):
            if explicit:
                raise UserError(
                    f"run directory {path} already holds a run; resume it with "
                    f"`ncollapse train --resume {path}` or choose another --name"
                )
            i = 2
            while (base / f"{name}-{i}").exists():
                i += 1
            path = base / f"{name}-{i}"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the run directory {path}: {exc.strerror}; choose another --out"
            ) from None
        run = cls(path)
        _CREATED.append(run)
        return run

    @classmethod
    def load(cls, path: str | Path | Run) -> Run:
        """An existing run directory (it has a ``config.yaml``); UserError otherwise."""
        run = path if isinstance(path, Run) else cls(path)
        if not run.path.exists():
            raise UserError(f"{run.path} is not a run directory: it does not exist")
        if not run.path.is_dir():
            raise UserError(f"{run.path} is not a directory (expected a run directory)")
        if not run.config_path.is_file():
            raise UserError(f"{run.path} is not a run directory: it has no {CONFIG_FILE}")
        return run

    def read_saved(self) -> SavedRun:
        """Read, once, every file a resume needs (config, data record, environment, metrics,
        checkpoint), raising the one-line error of the first damaged one before any data is
        loaded. A damaged ``env.json`` is no obstacle (it only keeps the thread count)."""
        config = self.config_dict()
        data = self.data()
        self.class_counts(data)  # what the data found now is compared with
        try:
            env = self.env()
        except UserError:
            env = {}
        if not isinstance(env, dict):  # valid JSON, but not what a run writes: as if damaged
            env = {}
        records = self.metrics()
        checkpoint = self.load_checkpoint() if self.checkpoint_path.is_file() else None
        return SavedRun(self, config, data, env, records, checkpoint)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Whether ``path`` is a run directory (holds a ``config.yaml``)."""
        return (Path(path) / CONFIG_FILE).is_file()

    # --------------------------------------------------------------- paths
    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TB_DIR

    @property
    def collapse_state_path(self) -> Path:
        return self.path / COLLAPSE_STATE_FILE

    def status(self) -> str:
        """``done`` (has a summary), ``resumable`` (has a checkpoint), ``started`` (a directory
        with neither: stopped before its first checkpoint) or ``new`` (no directory)."""
        if self.summary_path.is_file():
            return "done"
        if self.checkpoint_path.is_file():
            return "resumable"
        return "started" if self.path.exists() else "new"

    # --------------------------------------------------------------- writers
    def _write_yaml(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_bytes(
            self.path / name, yaml.safe_dump(jsonable(data), sort_keys=False).encode()
        )

    def _write_json(self, name: str, data: Any) -> None:
        atomic_write_bytes(self.path / name, (dumps(data, indent=2) + "\n").encode())

    def write_config(self, config: dict[str, Any]) -> None:
        self._write_yaml(CONFIG_FILE, config)

    def write_data(self, data: dict[str, Any]) -> None:
        self._write_json(DATA_FILE, data)

    def write_env(self, env: dict[str, Any]) -> None:
        self._write_json(ENV_FILE, env)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_json(SUMMARY_FILE, summary)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One record more (a line torn by a full disk is skipped when the file is read)."""
        try:
            with open(self.metrics_path, "a") as fh:
                fh.write(dumps(record) + "\n")
        except OSError as exc:
            raise write_error(self.metrics_path, exc) from None

    def truncate_metrics(
        self, last_epoch: int, records: list[dict[str, Any]] | None = None
    ) -> None:
        """Drop records after ``last_epoch`` (written after the checkpoint a resume starts
        from); ``records``: the file's records when they have been read already."""
        records = self.metrics() if records is None else records
        keep = [r for r in records if int(r.get("epoch", 0)) <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(dumps(r) + "\n" for r in keep).encode())

    def _save_torch(self, path: Path, obj: Any) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._save_torch(self.checkpoint_path, state)

    def save_model(self, state_dict: dict[str, Any]) -> None:
        self._save_torch(self.path / MODEL_FILE, state_dict)

    def save_collapse_state(self, source: Any = None, **arrays: Any) -> Path:
        """Write ``collapse_final.npz`` (see :func:`save_collapse_state`)."""
        return save_collapse_state(self.collapse_state_path, source, **arrays)

    # --------------------------------------------------------------- readers
    def _read_json(self, name: str) -> Any:
        p = self.path / name
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} has no {name}") from None
        except (ValueError, UnicodeDecodeError):
            raise UserError(
                f"{p} is damaged (not valid JSON); restore it or start a new run"
            ) from None
        except OSError as exc:
            raise UserError(f"cannot read {p}: {exc.strerror}") from None
        if not isinstance(data, dict):
            raise UserError(f"{p} is damaged (not a JSON object); restore it or start a new run")
        return data

    def _read_config(self) -> dict[str, Any]:
        what = "not valid YAML"
        try:
            raw = yaml.safe_load(self.config_path.read_text())
            what = "empty" if raw is None else "not a mapping"
        except (yaml.YAMLError, UnicodeDecodeError, ValueError):
            raw = None
        except OSError as exc:
            raise UserError(f"cannot read {self.config_path}: {exc.strerror}") from None
        if not isinstance(raw, dict):
            raise UserError(
                f"{self.config_path} is damaged ({what}); restore it or start a new run"
            )
        missing = [k for k in SECTIONS if not isinstance(raw.get(k), dict)]
        if missing:  # every run ever written has them: keys added later are filled in, not these
            raise UserError(
                f"{self.config_path} is damaged (no {' or '.join(missing)} section); restore it "
                "or start a new run"
            )
        return raw

    def config_dict(self) -> dict[str, Any]:
        """The saved config as written (a UserError names a damaged file). Keys added to the
        package since the run was written are absent: ``ncollapse.compose(base=...)`` fills
        them in with their defaults, which keep the old behaviour."""
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a run directory: it has no {CONFIG_FILE}")
        return self._read_config()

    def raw_config(self) -> dict[str, Any]:
        """The saved config exactly as written (no defaults filled in); {} when unreadable."""
        try:
            return self._read_config()
        except UserError:
            return {}

    def data(self) -> dict[str, Any]:
        return self._read_json(DATA_FILE)

    def class_counts(self, data: dict[str, Any] | None = None) -> list[int]:
        """The training counts of the data record (``data``, when it has been read already):
        what a resume and ``evaluate`` compare the data found now with; a record without a
        list of counts is named as damaged."""
        data = self.data() if data is None else data
        counts = data.get("class_counts")
        if not isinstance(counts, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
        ):
            raise UserError(
                f"{self.path / DATA_FILE} is damaged (no list of class_counts); restore it or "
                "start a new run"
            )
        return counts

    def env(self) -> dict[str, Any]:
        return self._read_json(ENV_FILE)

    def summary(self) -> dict[str, Any] | None:
        """The summary, or None when the run has not finished."""
        if not self.summary_path.is_file():
            return None
        return self._read_json(SUMMARY_FILE)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.is_file():
            raise UserError(f"{self.path} has no {CHECKPOINT_FILE} to resume from")
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # unpickling damaged bytes fails in many ways
            raise UserError(
                f"{self.checkpoint_path} is damaged and cannot be read ({type(exc).__name__}); "
                + _AGAIN
            ) from None
        missing = (
            [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else ["all"]
        )
        if missing:
            raise UserError(
                f"{self.checkpoint_path} is not a checkpoint written by ncollapse (it lacks "
                f"{', '.join(missing)}); {_AGAIN}"
            )
        bad, seen = nonfinite_tensors({"model": state["model"], "ema": state.get("ema")})
        if bad:
            raise UserError(
                f"{self.checkpoint_path} holds {_nonfinite_note(bad, seen)}: it is not a good "
                f"state to go on from; {_AGAIN}"
            )
        return state

    def load_model(self) -> dict[str, Any]:
        """The final weights (``model.pt``): a state dict whose tensors are all finite."""
        path = self.path / MODEL_FILE
        if not path.is_file():
            raise UserError(f"{self.path} has no {MODEL_FILE}: the run has not finished; resume it")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling damaged bytes fails in many ways
            state, why = None, type(exc).__name__
        else:
            why = "not a state dict"
        if not isinstance(state, dict):
            raise UserError(
                f"{path} is damaged ({why}); delete it and summary.json, and `ncollapse train "
                f"--resume {self.path}` writes them again from the last checkpoint"
            )
        bad, seen = nonfinite_tensors(state)
        if bad:
            raise UserError(
                f"{path} holds {_nonfinite_note(bad, seen)}: these weights predict nothing; "
                f"delete it and summary.json, and `ncollapse train --resume {self.path}` writes "
                "them again from the last checkpoint (or train a new run)"
            )
        return state

    def collapse_state(self) -> dict[str, np.ndarray] | None:
        """The arrays of ``collapse_final.npz``, or None when the run has none."""
        if not self.collapse_state_path.is_file():
            return None
        return load_collapse_state(self.collapse_state_path)
