"""Run configuration: typed sections, recipe files, ``--set`` overrides and their checks.

Layers of a config, lowest first: the defaults, a recipe file (with its ``extends:`` chain and
``method:`` preset), then ``key=value`` overrides. Every key is checked: an unknown key raises
:class:`~ncollapse.errors.ConfigError` naming the key and the closest valid one, and values are
coerced to the declared type with a message naming the key when that fails.

This package knows no component: the keys of a loss, a head, a dataset or a schedule are
declared by that component with its registry (:mod:`.section`). Commands and the Python API
build configs with :func:`ncollapse.composition.compose`, which loads every component first.
"""

from __future__ import annotations

from .checks import check_keys, scale_schedule, validate
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
from .presets import METHODS, RECIPE_KEY, method_preset
from .schema import (
    RUN_KEYS,
    SEED_MAX,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    scale_epochs,
    scale_fraction,
    seed_option,
)
from .section import INF, Option, Section, option, section

__all__ = [
    "INF",
    "METHODS",
    "RECIPES_DIR",
    "RECIPE_KEY",
    "RUN_KEYS",
    "SEED_MAX",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Option",
    "RunConfig",
    "Section",
    "all_keys",
    "check_keys",
    "complete_config_dict",
    "config_diff",
    "config_to_dict",
    "deep_merge",
    "dict_to_config",
    "find_config",
    "is_run_key",
    "method_preset",
    "option",
    "parse_override",
    "read_config_file",
    "recipe_names",
    "scale_epochs",
    "scale_fraction",
    "scale_schedule",
    "section",
    "seed_option",
    "validate",
]


def is_run_key(diff_line_or_key: str) -> bool:
    """Whether a config key (or a :func:`config_diff` line) is one of :data:`RUN_KEYS`: where
    and how a run executes, which a resume or a sweep rerun may change."""
    return diff_line_or_key.startswith(RUN_KEYS)
