"""Run configuration: typed dataclasses, recipe files, ``--set`` overrides and their checks.

Layers of a config, lowest first: the dataclass defaults (the official CIFAR-LT recipe), an
optional ``base`` dict, a recipe file (with its ``extends:`` chain and ``method:`` preset),
``extra`` dicts, then ``key=value`` overrides. Every key is checked: an unknown key raises
:class:`~ncollapse.errors.ConfigError` naming the key and the closest valid one, and values are
coerced to the declared type with a message naming the field when that fails.

Commands and the Python API build configs with :func:`ncollapse.composition.compose`, which adds
the method presets, the embedded digits defaults and the checks against the registries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checks import drw_start, scale_schedule, validate, warn_cut_schedule
from .io import (
    RECIPES_DIR,
    all_keys,
    complete_config_dict,
    config_diff,
    config_to_dict,
    deep_merge,
    dict_to_config,
    find_config,
    parse_override,
    read_config_file,
    recipe_names,
)
from .methods import METHODS, method_preset
from .schema import (
    RUN_KEYS,
    AllNCConfig,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    digits_defaults,
)

__all__ = [
    "METHODS",
    "RECIPES_DIR",
    "RUN_KEYS",
    "AllNCConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "all_keys",
    "complete_config_dict",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "digits_defaults",
    "drw_start",
    "find_config",
    "is_run_key",
    "load_config",
    "method_preset",
    "parse_override",
    "read_config_file",
    "recipe_names",
    "scale_schedule",
    "validate",
    "warn_cut_schedule",
]


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    method: str | None = None,
) -> Config:
    """Build a :class:`Config` from the dataclass defaults, then ``base``, the recipe file at
    ``path`` (``method`` replacing its preset, see :func:`read_config_file`), ``extra``, then
    each ``key=value`` of ``overrides``. Everything is validated.

    This is the low-level layering; :func:`ncollapse.composition.compose` is what the commands use.
    """
    data: dict[str, Any] = {}
    if base:
        data = deep_merge(data, base)
    if path is not None:
        data = deep_merge(data, read_config_file(path, method=method))
    elif method is not None:
        data = deep_merge(data, method_preset(method))
    if extra:
        data = deep_merge(data, extra)
    for text in overrides or []:
        data = deep_merge(data, parse_override(text))
    cfg = dict_to_config(data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from :func:`config_to_dict` output (for example a run's saved config)."""
    cfg = dict_to_config(data)
    validate(cfg)
    return cfg


def is_run_key(diff_line_or_key: str) -> bool:
    """Whether a config key (or a :func:`config_diff` line) is one of :data:`RUN_KEYS`: where
    and how a run executes, which a resume or a sweep rerun may change."""
    return diff_line_or_key.startswith(RUN_KEYS)
