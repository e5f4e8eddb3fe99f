"""A run directory parsed for the report: records by kind, the final state, the class counts.

Reading goes through :class:`ncollapse.rundir.Run`, which owns the files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..rundir import Run as RunDir

__all__ = ["Run", "read_run"]


@dataclass
class Run:
    """One run directory, parsed."""

    path: Path
    name: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    state: dict[str, np.ndarray] | None = None

    def select(self, kind: str, split: str | None = None) -> list[dict[str, Any]]:
        """Records of one kind (and split), in epoch order."""
        recs = [
            r
            for r in self.records
            if r.get("kind") == kind and (split is None or r.get("split") == split)
        ]
        return sorted(recs, key=lambda r: r.get("epoch", 0))

    def last(self, kind: str, split: str | None = None) -> dict[str, Any] | None:
        recs = self.select(kind, split)
        return recs[-1] if recs else None

    def class_names(self) -> list[str] | None:
        """The class names in label order (``data.json``), or None."""
        names = self.data.get("classes")
        return [str(n) for n in names] if isinstance(names, list) and names else None

    def train_counts(self) -> list[int] | None:
        """Training class counts: data.json, else collapse_final.npz, else a train record."""
        cc = self.data.get("class_counts")
        if isinstance(cc, dict):
            cc = cc.get("train")
        if cc is None:
            cc = self.data.get("train_counts") or self.data.get("class_counts_train")
        if cc is None and self.state is not None and self.last("collapse", "train") is None:
            cc = self.state["class_counts"].tolist()
        if cc is None:
            rec = self.last("collapse", "train")
            cc = rec.get("class_counts") if rec else None
        return [int(c) for c in cc] if cc is not None else None


def _method(config: dict[str, Any]) -> str:
    model = config.get("model") or {}
    loss = config.get("loss") or {}
    parts = [str(p) for p in (model.get("head"), loss.get("name")) if p]
    return "+".join(parts) if parts else "?"


def read_run(run_dir: str | Path) -> Run:
    """Parse a run directory; UserError with a clear message when it is not one."""
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (expected a run directory)")
    run = RunDir(path)
    if not run.metrics_path.is_file():
        raise UserError(
            f"{path} has no metrics.jsonl: not a run directory, or the run has not logged an "
            f"epoch yet"
        )
    config = run.raw_config() if run.config_path.is_file() else {}
    if run.config_path.is_file() and not config:
        run.config_dict()  # raises the one-line error naming the damaged file
    data = run.data() if (path / "data.json").is_file() else {}
    return Run(
        path=path,
        name=run.name,  # the directory name: what the user typed, and unique
        method=_method(config),
        config=config,
        data=data,
        records=run.metrics(),
        summary=run.summary(),
        state=run.collapse_state(),
    )
