"""Checks of a config's values, and schedule scaling.

Every key is checked against its own declaration (its valid values, its range; a key that
selects a registered thing, against that registry's names), then :func:`validate` checks the
combinations of the built-in keys. What a component requires of the rest of the config (a loss
that needs a certain head) is checked where the config is composed
(:func:`ncollapse.composition.compose`), by asking the registries.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from .schema import Config

__all__ = ["check_keys", "scale_schedule", "validate"]


def check_keys(cfg: Config) -> None:
    """Every key's value against its declaration (:meth:`~.section.Option.validate`)."""
    for key, opt in Config.walk():
        section, _, leaf = key.rpartition(".")
        holder = cfg
        for part in section.split(".") if section else []:
            holder = getattr(holder, part)
        value = getattr(holder, leaf)
        if isinstance(value, list) and opt.valid_values() is not None:
            for item in value:
                opt.validate(key, item)
        elif opt.valid_values() is not None or opt.range is not None or opt.check is not None:
            opt.validate(key, value)


def validate(cfg: Config) -> None:
    """Each key against its declaration, then the ranges and combinations of the built-in
    keys, each with a message that names the fix."""
    r = cfg.data.imbalance
    if r is not None and (not (0.0 < r <= 1.0) or math.isnan(r)):
        hint = f" (for an imbalance ratio of {r:g} use r = {1 / r:g})" if r > 1 else ""
        raise ConfigError(
            f"imbalance factor data.imbalance must be in (0, 1] (r = n_min/n_max; 1 is balanced, "
            f"0.01 is imbalance ratio 100), got {r:g}{hint}"
        )
    check_keys(cfg)
    o = cfg.optim
    if o.epochs < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {o.epochs}")
    if o.batch_size < 2:  # BatchNorm normalises over the batch: one sample cannot train
        raise ConfigError(f"optim.batch_size must be >= 2 (BatchNorm), got {o.batch_size}")
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise ConfigError(f"optim.lr must be a finite number > 0, got {o.lr}")
    for key in ("weight_decay", "mixup_alpha"):
        v = getattr(o, key)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"optim.{key} must be a finite number >= 0, got {v}")
    if not (math.isfinite(o.warmup_epochs) and 0 <= o.warmup_epochs < max(o.epochs, 1) + 1e-9):
        raise ConfigError(
            f"optim.warmup_epochs must be in [0, optim.epochs], got {o.warmup_epochs}"
        )
    if cfg.model.width < 1:
        raise ConfigError(f"model.width must be >= 1, got {cfg.model.width}")
    bad = [x for x in cfg.eval.collapse_splits if x not in ("train", "test")]
    if bad:
        raise ConfigError(f"eval.collapse_splits takes train and/or test, got {bad}")
    if not 0.0 <= o.ema < 1.0:
        raise ConfigError(f"optim.ema is a decay per step in [0, 1) (0: off), got {o.ema}")
    for key in ("mixup_epochs", "ema_start", "balanced_from"):
        v = getattr(o, key)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"optim.{key} must be >= 0 epochs, got {v}")
    bad = [x for x in cfg.eval.splits if x not in ("test", "val")]
    if bad or not cfg.eval.splits:
        raise ConfigError(f"eval.splits takes test and/or val, got {cfg.eval.splits}")
    if "val" in cfg.eval.splits and cfg.data.val == "none":
        raise ConfigError(
            "eval.splits asks for val but there is no validation split: set data.val=unused "
            "(images the long-tail subset leaves unused) or drop val from eval.splits"
        )
    for key, least in (("every", 0), ("collapse_every", 0), ("batch_size", 1)):
        if getattr(cfg.eval, key) < least:
            raise ConfigError(f"eval.{key} must be >= {least}, got {getattr(cfg.eval, key)}")
    if cfg.run.checkpoint_every < 1:
        raise ConfigError(
            f"run.checkpoint_every must be >= 1 (epochs between checkpoints), got "
            f"{cfg.run.checkpoint_every}"
        )
    if cfg.run.threads is not None and cfg.run.threads < 1:
        raise ConfigError(
            f"run.threads must be >= 1 (or null for the cores not busy when the run starts), got {cfg.run.threads}"
        )
    d = cfg.data
    if d.size is not None and d.size < 1:
        raise ConfigError(f"data.size must be >= 1 pixels (or null to keep the size), got {d.size}")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {d.workers}")
    if cfg.run.loss_batch not in ("auto", "local", "global"):
        raise ConfigError(
            f"run.loss_batch takes auto, local or global (the batch the loss sees under "
            f"torchrun), got {cfg.run.loss_batch!r}"
        )


def scale_schedule(cfg: Config, epochs: int) -> Config:
    """A copy of ``cfg`` shortened (or lengthened) to ``epochs``: every key counted in epochs
    (the decay milestones, the DRW, mixup, EMA and re-sampling epochs: those declared with a
    ``scale``) scales proportionally, so a short run is a miniature of the full recipe; the
    warm-up keeps its length in epochs, capped at a sixth of the new schedule (5 of 200 stays 5
    at 30 epochs, becomes 3.33 at 20).

    A warm-up protects the first updates from the full rate while the weights and BatchNorm
    statistics are still those of the initialisation, so it is counted in steps, not as a share
    of the schedule. Scaled proportionally, 5 of 200 epochs would be 0.75 of 30, which cost the
    learnable-classifier baseline about a point against the 5-epoch warm-up of a plain loop of
    the released recipe (docs/claims.md, row 1)."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    factor = epochs / cfg.optim.epochs
    new = cfg.replace()
    new.optim.epochs = epochs
    for key, opt in Config.walk():
        if opt.scale is None:
            continue
        section, _, leaf = key.rpartition(".")
        holder = new
        for part in section.split(".") if section else []:
            holder = getattr(holder, part)
        setattr(holder, leaf, opt.scale(getattr(holder, leaf), factor, epochs))
    return new
