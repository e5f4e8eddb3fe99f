"""The run directory: one source of truth for everything a run printed (docs/architecture.md).

Writes are atomic (temporary file, then ``os.replace``), so an interrupted run never leaves a
half-written checkpoint or config behind, and an existing run directory is never overwritten.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import UserError

__all__ = ["RunDir", "atomic_write_bytes", "read_metrics"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --------------------------------------------------------------- creation
    @classmethod
    def create(cls, out_dir: str | Path, name: str, explicit: bool) -> RunDir:
        """Make a new run directory ``out_dir/name``. An explicitly named one that already holds
        a run is refused (resume it instead); a derived name gets a numeric suffix."""
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
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    # --------------------------------------------------------------- files
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_yaml(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_bytes(
            self.path / name, yaml.safe_dump(_jsonable(data), sort_keys=False).encode()
        )

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_bytes(
            self.path / name, (json.dumps(_jsonable(data), indent=2) + "\n").encode()
        )

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def read_config_dict(self) -> dict[str, Any]:
        """The run's saved config, completed with the defaults of keys added since it was
        written (see :func:`~ncollapse.config.complete_config_dict`)."""
        from ..config import complete_config_dict

        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a run directory: it has no config.yaml")
        return complete_config_dict(yaml.safe_load(self.config_path.read_text()) or {})

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(_jsonable(record)) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop records after ``last_epoch`` (written after the checkpoint a resume starts from)."""
        keep = [r for r in self.metrics() if int(r.get("epoch", 0)) <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep).encode())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.is_file():
            raise UserError(f"{self.path} has no checkpoint.pt to resume from")
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
