"""What a sweep runs: the grid (methods x imbalance factors x seeds), the settings every cell
shares, each cell's config (through :func:`ncollapse.composition.compose`) and the sweep.json record."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..composition import compose
from ..config import Config, is_run_key
from ..errors import UserError

__all__ = [
    "CONTROLLED",
    "SETTINGS",
    "SPEC_FILE",
    "SweepSpec",
    "cell_name",
    "check_spec",
    "load_spec_record",
    "parse_imbalance",
    "parse_methods",
    "parse_ratios",
    "parse_seeds",
    "ratio_label",
]

#: config keys the sweep sets for every cell, with the option that sets them ("": none); a
#: ``--set`` of one of them is refused
CONTROLLED = {
    "seed": "--seeds",
    "data.imbalance": "--imbalance",
    "data.subset_seed": "--subset-seed",
    "run.out_dir": "--out",
    "run.name": "",
    "name": "",
    "optim.epochs": "--epochs",
}
#: settings shared by all cells; a rerun into the same directory must keep them
SETTINGS = ("recipe", "epochs", "subset_seed", "overrides", "shared_recipe")

SPEC_FILE = "sweep.json"


# ------------------------------------------------------------------ parsing the grid


def _split(text: str | Sequence[Any]) -> list[str]:
    if isinstance(text, str):
        return [t.strip() for t in text.split(",") if t.strip()]
    return [str(t).strip() for t in text if str(t).strip()]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Comma-separated method presets, checked against :data:`ncollapse.config.METHODS`."""
    from ..methods import METHODS

    methods = _split(text)
    if not methods:
        raise UserError("--methods is empty; give e.g. --methods ce,etf_dr")
    for m in methods:
        METHODS.get(m, "--methods")  # ConfigError with a did-you-mean
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise UserError(f"--methods lists {', '.join(twice)} twice; each method is trained once")
    return methods


def _numbers(text: str | Sequence[Any], option: str, example: str) -> list[float]:
    out: list[float] = []
    for item in _split(text):
        try:
            v = float(item)
        except ValueError:
            raise UserError(f"{option} takes numbers such as {example}, got {item!r}") from None
        if not math.isfinite(v) or v <= 0:
            raise UserError(
                f"{option} values must be finite and > 0 (e.g. {example}), got {item!r}"
            )
        out.append(v)
    if not out:
        raise UserError(f"{option} is empty; give e.g. {option} {example}")
    return out


def _unique(factors: list[float]) -> list[float]:
    out: list[float] = []
    for r in factors:
        r = float(f"{r:.12g}")  # 1/100 -> 0.01 exactly as written
        if any(math.isclose(r, o) for o in out):
            raise UserError(f"the grid lists imbalance factor {r:g} (ratio {1 / r:g}) twice")
        out.append(r)
    return out


def parse_imbalance(text: str | Sequence[Any]) -> list[float]:
    """Imbalance factors r in (0, 1] (0.01 = imbalance ratio 100), as everywhere in ncollapse."""
    values = _numbers(text, "--imbalance", "0.01,0.1")
    for v in values:
        if v > 1:
            raise UserError(
                f"--imbalance takes imbalance factors r in (0, 1]; {v:g} looks like an imbalance "
                f"ratio: use --ratio {v:g} (or --imbalance {1 / v:g})"
            )
    return _unique(values)


def parse_ratios(text: str | Sequence[Any]) -> list[float]:
    """Imbalance ratios n_max/n_min >= 1 (100, 10), returned as factors r = 1/ratio."""
    values = _numbers(text, "--ratio", "100,10")
    for v in values:
        if v < 1:
            raise UserError(
                f"--ratio takes imbalance ratios n_max/n_min >= 1; {v:g} looks like an imbalance "
                f"factor: use --imbalance {v:g} (or --ratio {1 / v:g})"
            )
    return _unique([1.0 / v for v in values])


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
    bad = [s for s in out if not 0 <= s < 2**32]
    if bad:
        raise UserError(f"--seeds takes seeds in [0, {2**32 - 1}], got {bad[0]}")
    return out


def ratio_label(factor: float | None) -> str:
    """``0.01 -> '100'``: the imbalance ratio 1/r, as short as it is exact; ``None`` (a user's
    own data trained as given) -> ``'given'``."""
    return "given" if factor is None else f"{1.0 / factor:.6g}"


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
    shared_recipe: bool = False

    def recipe_label(self) -> str:
        return Path(self.recipe).stem if self.recipe else "digits"

    def _base_config(self, method: str) -> Config:
        return compose(self.recipe, method, list(self.overrides))

    def resolve(self) -> SweepSpec:
        """Checked copy with the recipe's defaults filled in (imbalance, subset seed)."""
        methods = parse_methods(self.methods)
        seeds = parse_seeds(self.seeds)
        for text in self.overrides:
            key = text.split("=", 1)[0].strip()
            if key in CONTROLLED:
                option = CONTROLLED[key]
                fix = (
                    f"use {option} instead of"
                    if option
                    else "runs are named after their cell: drop"
                )
                raise UserError(f"the sweep sets '{key}' for every cell; {fix} --set {text}")
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
        name = cell_name(method, factor, seed)
        return compose(
            self.recipe,
            method,
            [*self.overrides, f"name={name}"],
            seed=seed,
            imbalance=factor,
            subset_seed=self.subset_seed,
            out=out_dir,
            name=name,
            device=self.device,
            progress=self.progress,
            shared_recipe=self.shared_recipe,
            epochs=self.epochs,
        )

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> SweepSpec:
        """The grid a ``sweep.json`` record (:meth:`to_json`) describes; KeyError when the
        record lacks an axis."""
        return cls(
            methods=record["methods"],
            seeds=record["seeds"],
            imbalance=record["imbalance"],
            recipe=record.get("recipe"),
            epochs=record.get("epochs"),
            subset_seed=record.get("subset_seed"),
            overrides=list(record.get("overrides") or []),
            shared_recipe=bool(record.get("shared_recipe", False)),
        )

    def to_json(self) -> dict[str, Any]:
        assert self.imbalance is not None
        return {
            "recipe": self.recipe,
            "epochs": self.epochs,
            "subset_seed": self.subset_seed,
            "shared_recipe": self.shared_recipe,
            "overrides": [o for o in self.overrides if not is_run_key(o.strip())],
            "methods": list(self.methods),
            "imbalance": list(self.imbalance),
            "imbalance_ratio": [ratio_label(r) for r in self.imbalance],
            "seeds": list(self.seeds),
            "cells": [cell_name(m, r, s) for r, s, m in self.cells()],
        }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: what each axis of a recorded grid must hold
_AXES: dict[str, Any] = {
    "methods": lambda v: isinstance(v, str) and bool(v),
    "imbalance": lambda v: _is_number(v) and 0 < v <= 1,
    "seeds": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
}


def load_spec_record(path: Path) -> dict[str, Any]:
    """The grid recorded in ``path`` (``sweep.json``), checked: a JSON object whose methods,
    imbalance factors and seeds are lists of what a sweep writes there (the ratios are derived
    again from the factors). A damaged record is a :class:`UserError` naming what is wrong."""
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        record = None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    again = (
        "it records the sweep's grid: restore it, or delete it and rerun the sweep command "
        "with the settings the finished runs were trained with"
    )
    if not isinstance(record, dict):
        raise UserError(f"{path} is damaged (not a JSON object); {again}")
    bad = [
        k
        for k, ok in _AXES.items()
        if not isinstance(record.get(k), list) or not all(ok(v) for v in record[k])
    ]
    over = record.get("overrides")
    if over is not None and not (isinstance(over, list) and all(isinstance(o, str) for o in over)):
        bad.append("overrides")
    if bad:
        raise UserError(
            f"{path} is damaged ({', '.join(bad)}: missing or not a list of "
            f"{' / '.join(_WHAT[k] for k in bad)}); {again}"
        )
    return {**record, "imbalance_ratio": [ratio_label(r) for r in record["imbalance"]]}


_WHAT = {
    "methods": "names",
    "imbalance": "factors in (0, 1]",
    "seeds": "integers >= 0",
    "overrides": "--set strings",
}


def check_spec(path: Path, new: dict[str, Any]) -> list[str]:
    """Refuse a rerun whose shared settings differ; return notes on changed axes."""
    old = load_spec_record(path)
    defaults = {"shared_recipe": False}  # settings added since older sweeps were recorded
    diff = [
        f"{k}: {json.dumps(old.get(k, defaults.get(k)))} -> {json.dumps(new.get(k))}"
        for k in SETTINGS
        if old.get(k, defaults.get(k)) != new.get(k)
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
