"""The one way to build a run's config: :func:`compose`, used by every command and by the
Python API (``ncollapse.train``, ``ncollapse.compose``).

Layers, lowest first:

1. the defaults: the official CIFAR-LT recipe in the dataclasses, with the embedded digits
   data and its short schedule when no recipe is given (or ``base``, e.g. a saved config);
2. the recipe file (``configs/*.yaml`` or any path), with its ``extends:`` chain and its own
   ``method:`` preset;
3. ``method``: a method preset (``ce``, ``etf_dr``, ...) over the recipe, replacing the recipe's;
4. ``overrides``: ``key=value`` strings (the command line's ``--set``), or a nested dict;
5. the typed shortcuts (``seed``, ``imbalance``, ``device``, ``out``, ``name``, ...);
6. ``epochs``: the schedule shortened or lengthened proportionally (warm-up, milestones, DRW).

Every key is checked, and every name that selects a registered thing (dataset, backbone,
head, loss, method) is checked against its registry, before any data is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import (
    Config,
    deep_merge,
    dict_to_config,
    digits_defaults,
    find_config,
    method_preset,
    parse_override,
    read_config_file,
    scale_schedule,
    validate,
    warn_cut_schedule,
)
from .errors import ConfigError, did_you_mean
from .rundir import check_run_name

__all__ = ["check_choices", "check_values", "compose"]

#: seeds go to NumPy's legacy generator too, which takes 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1


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
    (by default a baseline brings its own paper's recipe; see :mod:`ncollapse.config.methods`).
    """
    path = find_config(recipe) if recipe is not None else None
    data: dict[str, Any] = dict(base) if base is not None else {}
    if base is None and path is None:
        data = digits_defaults()
    if path is not None:
        data = deep_merge(data, read_config_file(path, method=method, shared_recipe=shared_recipe))
    elif method is not None:
        data = deep_merge(data, method_preset(method, data, shared_recipe=shared_recipe))
        data["name"] = method
    if isinstance(overrides, Mapping):
        data = deep_merge(data, dict(overrides))
    else:
        for text in overrides:
            data = deep_merge(data, parse_override(text))
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
    check_choices(cfg)
    check_values(cfg)
    with warnings.catch_warnings():
        if base is not None:  # a saved run's config: warned about when that run was made
            warnings.simplefilter("ignore", UserWarning)
        validate(cfg)
    check_run_name(cfg.run.name if cfg.run.name is not None else cfg.name)  # a run directory's name
    if epochs is not None:
        cfg = scale_schedule(cfg, epochs)
    elif base is None:
        warn_cut_schedule(cfg)
    return cfg


def _check(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(
            f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}"
            + did_you_mean(str(value), allowed)
        )


def check_choices(cfg: Config) -> None:
    """Every name that selects something is checked against the list its owner keeps (the
    registries of datasets, backbones, heads and losses; the modes of the data and losses)."""
    from .data import DATASETS, VAL_MODES
    from .data.augment import AUGMENTS
    from .data.longtail import PROFILES
    from .engine.progress import PROGRESS_MODES
    from .engine.schedule import SCHEDULES
    from .heads import FEATURE_NORMS, HEAD_INITS, HEADS
    from .losses import BALANCE_MODES, LOSSES
    from .models import BACKBONES

    _check("data.name", cfg.data.name, DATASETS)
    _check("data.val", cfg.data.val, VAL_MODES)
    _check("run.progress", cfg.run.progress, PROGRESS_MODES)
    _check("optim.schedule", cfg.optim.schedule, SCHEDULES)
    _check("data.profile", cfg.data.profile, PROFILES)
    _check("data.augment", cfg.data.augment, ("auto", *AUGMENTS))
    _check("model.backbone", cfg.model.backbone, BACKBONES)
    _check("model.head", cfg.model.head, HEADS)
    _check("model.feature_norm", cfg.model.feature_norm, FEATURE_NORMS)
    _check("model.head_init", cfg.model.head_init, HEAD_INITS)
    _check("loss.name", cfg.loss.name, LOSSES)
    _check("loss.balance", cfg.loss.balance, BALANCE_MODES)


def _in_range(key: str, value: float, low: float, high: float, closed: str = "[]") -> None:
    ok_low = value >= low if closed[0] == "[" else value > low
    ok_high = value <= high if closed[1] == "]" else value < high
    if not (ok_low and ok_high):
        hi = "inf)" if high == float("inf") else f"{high:g}{closed[1]}"
        raise ConfigError(f"config key '{key}' must be in {closed[0]}{low:g}, {hi}, got {value!r}")


def check_values(cfg: Config) -> None:
    """Ranges of the values :func:`ncollapse.config.validate` leaves alone: the seeds (NumPy's
    range), the digits test share, and the loss and AllNC constants, so that a value no
    training can use is refused here rather than as a traceback or a NaN an epoch later."""
    inf = float("inf")
    for key, value in (
        ("seed", cfg.seed),
        ("data.subset_seed", cfg.data.subset_seed),
        ("data.val_seed", cfg.data.val_seed),
        ("model.etf_seed", cfg.model.etf_seed),
    ):
        if not 0 <= value <= SEED_MAX:
            raise ConfigError(
                f"config key '{key}' is a seed: an integer in [0, {SEED_MAX}], got {value}"
            )
    loss, nc = cfg.loss, cfg.allnc
    for key, value, low, high, closed in (
        ("data.test_fraction", cfg.data.test_fraction, 0.0, 1.0, "()"),
        ("loss.reg_lam", loss.reg_lam, 0.0, inf, "[)"),
        ("loss.focal_gamma", loss.focal_gamma, 0.0, inf, "[)"),
        ("loss.ldam_max_margin", loss.ldam_max_margin, 0.0, inf, "[)"),
        ("loss.ldam_scale", loss.ldam_scale, 0.0, inf, "()"),
        ("loss.drw_beta", loss.drw_beta, 0.0, 1.0, "[)"),
        ("allnc.hycon_weight", nc.hycon_weight, 0.0, inf, "[)"),
        ("allnc.p2p_weight", nc.p2p_weight, 0.0, inf, "[)"),
        ("allnc.hycon_temperature", nc.hycon_temperature, 0.0, inf, "()"),
        ("allnc.p2p_temperature", nc.p2p_temperature, 0.0, inf, "()"),
        ("allnc.mean_momentum", nc.mean_momentum, 0.0, 1.0, "[]"),
        ("allnc.batch_weight", nc.batch_weight, 0.0, 1.0, "[]"),
    ):
        _in_range(key, value, low, high, closed)
