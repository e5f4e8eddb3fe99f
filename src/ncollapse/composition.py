"""The one way to build a run's config: :func:`compose`, used by every command and by the
Python API (``ncollapse.train``, ``ncollapse.compose``).

Layers, lowest first:

1. the defaults: the official CIFAR-LT recipe in the key declarations, with the embedded digits
   data and its short schedule when no recipe is given (or ``base``, e.g. a saved config);
2. the recipe file (``configs/*.yaml`` or any path), with its ``extends:`` chain and its own
   ``method:`` preset;
3. ``method``: a method preset (``ce``, ``etf_dr``, ...) over the recipe, replacing the recipe's;
4. ``overrides``: ``key=value`` strings (the command line's ``--set``), or a nested dict;
5. the typed shortcuts (``seed``, ``imbalance``, ``device``, ``out``, ``name``, ...);
6. ``epochs``: the schedule shortened or lengthened proportionally (warm-up, milestones, DRW),
   the overrides' epoch-counted values included (a warning names each that changed).

Every key is checked against its declaration, every name that selects a registered thing
against its registry, and what the selected things need of each other (a loss that needs a
certain head) by asking their registries, before any data is loaded. Nothing here knows a
dataset, a head or a loss by name: importing this module loads every component, which
registers itself.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# every component registers itself, and its config keys, on import
from . import methods as _methods  # noqa: F401  (the method presets)
from .config import (
    SEED_MAX,
    Config,
    deep_merge,
    dict_to_config,
    find_config,
    method_preset,
    parse_override,
    read_config_file,
    scale_schedule,
    validate,
)
from .data import DATASETS, default_imbalance
from .engine.graphs import STEPS
from .engine.optimizers import OPTIMIZERS
from .engine.schedule import SCHEDULES
from .heads import HEADS
from .losses import LOSSES
from .models import BACKBONES
from .registry import Registry
from .rundir import check_run_name

__all__ = ["REGISTRIES", "SEED_MAX", "check_components", "compose", "default_recipe"]

#: the registries whose names a config selects, in the order they are checked
REGISTRIES: tuple[Registry[Any], ...] = (
    DATASETS,
    BACKBONES,
    HEADS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    STEPS,
)


def default_recipe() -> dict[str, Any]:
    """What a config without a recipe starts from: the default dataset's own short recipe
    (the embedded digits train in seconds)."""
    entry = DATASETS.entry(DATASETS.default or "")
    return copy.deepcopy(dict(entry.info.get("recipe", {})))


def compose(
    recipe: str | Path | None = None,
    method: str | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    base: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    imbalance: float | None = None,
    subset_seed: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    download: bool | None = None,
    threads: int | None = None,
    progress: str | None = None,
    shared_recipe: bool = False,
) -> Config:
    """A validated :class:`~ncollapse.config.Config` (see the module docstring for the order).

    ``recipe``: a recipe name (``cifar10_lt_r100_etf_dr``) or a YAML file; None gives the
    embedded long-tailed digits with their short schedule (unless ``base`` is given).
    ``imbalance`` is the imbalance factor r in (0, 1] (0.01 = imbalance ratio 100). A ``base``
    (a saved run's config, for a resume) is checked again but its warnings are not repeated.
    ``shared_recipe``: a method preset changes only the head and loss, not the training recipe
    (by default a baseline brings its own paper's recipe; see :mod:`ncollapse.methods`).
    """
    path = find_config(recipe) if recipe is not None else None
    data: dict[str, Any] = dict(base) if base is not None else {}
    if path is not None:
        data = deep_merge(data, read_config_file(path, method=method, shared_recipe=shared_recipe))
    upper = _overrides(overrides)
    if base is None and path is None:
        data = default_recipe()
        chosen = upper.get("data", {}).get("name") if isinstance(upper.get("data"), dict) else None
        if chosen is not None and chosen != DATASETS.default:
            data.pop("data", None)  # the default dataset's own data settings are not yours
    if path is None and method is not None:
        data = deep_merge(data, method_preset(method, data, shared_recipe=shared_recipe))
        data["name"] = method
    data = deep_merge(data, upper)
    typed: dict[str, Any] = {}
    for key, value in (
        ("seed", seed),
        ("data.imbalance", imbalance),
        ("data.subset_seed", subset_seed),
        ("data.download", download),
        ("run.device", device),
        ("run.out_dir", None if out is None else str(out)),
        ("run.name", name),
        ("run.threads", threads),
        ("run.progress", progress),
    ):
        if value is not None:
            section, _, leaf = key.rpartition(".")
            typed = deep_merge(typed, {section: {leaf: value}} if section else {leaf: value})
    data = deep_merge(data, typed)
    cfg = dict_to_config(data)
    if cfg.data.imbalance is None and cfg.data.name in DATASETS:
        # the dataset's own: the benchmarks' long-tail protocol; your own data stays as given
        cfg.data.imbalance = default_imbalance(cfg.data.name)
    with warnings.catch_warnings():
        if base is not None:  # a saved run's config: warned about when that run was made
            warnings.simplefilter("ignore", UserWarning)
        validate(cfg)
        check_components(cfg)
    check_run_name(cfg.run.name if cfg.run.name is not None else cfg.name)  # a run directory's name
    if epochs is not None:
        before = cfg.optim.epochs
        scaled = scale_schedule(cfg, epochs)
        _warn_scaled_overrides(upper, cfg, scaled, before, epochs)
        cfg = scaled
    return cfg


def _warn_scaled_overrides(upper: dict, cfg: Config, scaled: Config, before: int, epochs: int):
    """An override counted in epochs is read in the recipe's own length and scaled with the
    rest (layer 6): say so when that changed it, so ``--epochs 30 --set loss.drw_epoch=24``
    on a 72-epoch recipe does not silently mean epoch 10."""
    for key, opt in Config.walk():
        if opt.scale is None:
            continue
        node: Any = upper
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT:
            continue
        old, new = _value(cfg, key), _value(scaled, key)
        if old != new:
            warnings.warn(
                f"--set {key}={node} counts epochs of the recipe's {before}; --epochs {epochs} "
                f"scales it to {new}. To mean {node} of {epochs} epochs, give "
                f"{key}={_unscale(node, before, epochs)} (or drop --epochs and set "
                f"optim.epochs={epochs} with every epoch-counted key yourself)",
                UserWarning,
                stacklevel=3,
            )


_ABSENT = object()


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _unscale(value: Any, before: int, epochs: int) -> Any:
    """The value that ``--epochs`` would scale to ``value`` (proportionally)."""

    def one(v: Any) -> Any:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return v
        x = v * before / epochs
        return round(x) if isinstance(v, int) else round(x, 6)

    return [one(v) for v in value] if isinstance(value, list) else one(value)


def _overrides(overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` strings (or a nested dict) as one nested dict."""
    if isinstance(overrides, Mapping):
        return deep_merge({}, dict(overrides))
    out: dict[str, Any] = {}
    for text in overrides:
        out = deep_merge(out, parse_override(text))
    return out


def check_components(cfg: Config) -> None:
    """Ask each registry whether the config suits the thing it selects there: what that thing
    requires of other keys (a loss that needs a certain head) and its own checks."""
    for registry in REGISTRIES:
        registry.check(cfg)
