"""Range checks of a config, the deferred re-weighting epoch, and schedule scaling.

Names that select a registered thing (a loss, a head, a dataset, ...) are checked against their
registries where the config is composed (:func:`ncollapse.composition.compose`); this module checks
values and the combinations the config alone can judge.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

from ..errors import ConfigError
from .schema import Config

__all__ = ["drw_start", "scale_schedule", "validate", "warn_cut_schedule"]


def validate(cfg: Config) -> None:
    """Range and choice checks, each with a message that names the fix."""
    r = cfg.data.imbalance
    if not (0.0 < r <= 1.0) or math.isnan(r):
        hint = f" (for an imbalance ratio of {r:g} use r = {1 / r:g})" if r > 1 else ""
        raise ConfigError(
            f"imbalance factor data.imbalance must be in (0, 1] (r = n_min/n_max; 1 is balanced, "
            f"0.01 is imbalance ratio 100), got {r:g}{hint}"
        )
    o = cfg.optim
    if o.epochs < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {o.epochs}")
    if o.batch_size < 1:
        raise ConfigError(f"optim.batch_size must be >= 1, got {o.batch_size}")
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise ConfigError(f"optim.lr must be a finite number > 0, got {o.lr}")
    if not 0.0 <= o.momentum < 1.0:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
    for key in ("weight_decay", "mixup_alpha", "gamma"):
        v = getattr(o, key)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"optim.{key} must be a finite number >= 0, got {v}")
    if not (math.isfinite(o.warmup_epochs) and 0 <= o.warmup_epochs < max(o.epochs, 1) + 1e-9):
        raise ConfigError(
            f"optim.warmup_epochs must be in [0, optim.epochs], got {o.warmup_epochs}"
        )
    if o.schedule != "step" and o.warmup_epochs >= o.epochs:
        raise ConfigError("optim.warmup_epochs must be shorter than optim.epochs")
    if list(o.milestones) != sorted(o.milestones):
        raise ConfigError(f"optim.milestones must be increasing, got {o.milestones}")
    if cfg.model.scale <= 0:
        raise ConfigError(f"model.scale must be > 0, got {cfg.model.scale}")
    if cfg.model.width < 1:
        raise ConfigError(f"model.width must be >= 1, got {cfg.model.width}")
    bad = [x for x in cfg.eval.collapse_splits if x not in ("train", "test")]
    if bad:
        raise ConfigError(f"eval.collapse_splits takes train and/or test, got {bad}")
    if not 0.0 <= o.final_lr <= 1.0:
        raise ConfigError(f"optim.final_lr is a fraction of optim.lr in [0, 1], got {o.final_lr}")
    if o.lr_factors is not None and (
        not o.lr_factors or any(not (math.isfinite(f) and f > 0) for f in o.lr_factors)
    ):
        raise ConfigError(
            f"optim.lr_factors takes positive factors, one per milestone, got {o.lr_factors}"
        )
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
    if d.val_per_class < 1:
        raise ConfigError(f"data.val_per_class must be >= 1, got {d.val_per_class}")
    if d.size is not None and d.size < 1:
        raise ConfigError(f"data.size must be >= 1 pixels (or null to keep the size), got {d.size}")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {d.workers}")
    if cfg.loss.name == "dr" and cfg.model.head != "etf":
        raise ConfigError(
            "loss.name=dr regresses onto the fixed ETF and needs model.head=etf "
            f"(got model.head={cfg.model.head})"
        )
    start = drw_start(cfg)
    if start is not None and start < 0:
        raise ConfigError(f"loss.drw_epoch must be >= 0, got {start}")
    if start is not None and cfg.loss.name in ("dr", "allnc"):
        raise ConfigError(
            f"deferred re-weighting (loss.drw / loss.drw_epoch) weights a logit loss (ce, la, bs, "
            f"focal, ldam); loss.name={cfg.loss.name} has none: unset loss.drw and loss.drw_epoch"
        )
    if start is not None and start >= o.epochs:
        warnings.warn(
            f"deferred re-weighting starts at epoch {start} but the run has {o.epochs} epochs, "
            "so it never switches on; lower loss.drw_epoch (or the first of optim.milestones)",
            stacklevel=2,
        )
    if cfg.loss.name == "ldam" and cfg.model.head in ("linear", "linear-frozen"):
        warnings.warn(
            f"loss.name=ldam on model.head={cfg.model.head}: LDAM's margins and scale "
            f"(loss.ldam_max_margin={cfg.loss.ldam_max_margin:g}, "
            f"loss.ldam_scale={cfg.loss.ldam_scale:g}) are sized for cosine logits in [-1, 1] "
            "and usually make a plain linear classifier diverge; set model.head=cosine",
            stacklevel=2,
        )
    if cfg.run.loss_batch not in ("auto", "local", "global"):
        raise ConfigError(
            f"run.loss_batch takes auto, local or global (the batch the loss sees under "
            f"torchrun), got {cfg.run.loss_batch!r}"
        )


def drw_start(cfg: Config) -> int | None:
    """The 0-based epoch from which deferred re-weighting is on, or None when it is off:
    ``loss.drw_epoch`` when set (setting it turns DRW on), else the first lr milestone when
    ``loss.drw`` is true (LDAM-DRW re-weights from the first decay: epoch 160 of 200)."""
    if cfg.loss.drw_epoch is not None:
        return cfg.loss.drw_epoch
    if not cfg.loss.drw:
        return None
    if not cfg.optim.milestones:
        raise ConfigError(
            "loss.drw=true starts re-weighting at the first lr milestone, but optim.milestones "
            "is empty; set loss.drw_epoch=N"
        )
    return int(cfg.optim.milestones[0])


def _whole_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


#: the longest warm-up ``--epochs`` leaves, as a share of the new schedule
WARMUP_CAP = 1 / 6


def scale_schedule(cfg: Config, epochs: int) -> Config:
    """A copy of ``cfg`` shortened (or lengthened) to ``epochs``: the decay milestones and the
    DRW, mixup, EMA and re-sampling epochs scale proportionally, so a short run is a miniature of
    the full recipe; the warm-up keeps its length in epochs, capped at a sixth of the new
    schedule (5 of 200 stays 5 at 30 epochs, becomes 3.33 at 20).

    A warm-up protects the first updates from the full rate while the weights and BatchNorm
    statistics are still those of the initialisation, so it is counted in steps, not as a share
    of the schedule. Scaled proportionally, 5 of 200 epochs would be 0.75 of 30, which cost the
    learnable-classifier baseline about a point against the 5-epoch warm-up of a plain loop of
    the released recipe (docs/claims.md, row 1)."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    old = cfg.optim.epochs
    f = epochs / old

    def scaled(e: int, least: int) -> int:  # halves round up (Python's round() would go to even)
        return max(least, math.floor(e * f + 0.5))

    new = dataclasses.replace(cfg)
    new.optim = dataclasses.replace(
        cfg.optim,
        epochs=epochs,
        # a fraction of an epoch ramps per batch (not rounded: a one-epoch ramp is already the
        # full rate)
        warmup_epochs=_whole_if_whole(round(min(cfg.optim.warmup_epochs, epochs * WARMUP_CAP), 6)),
        milestones=[scaled(m, 1) for m in cfg.optim.milestones],
        mixup_epochs=None
        if cfg.optim.mixup_epochs is None
        else _whole_if_whole(round(cfg.optim.mixup_epochs * f, 6)),
        ema_start=_whole_if_whole(round(cfg.optim.ema_start * f, 6)),
        balanced_from=None
        if cfg.optim.balanced_from is None
        else _whole_if_whole(round(cfg.optim.balanced_from * f, 6)),
    )
    if cfg.loss.drw_epoch is not None:
        new.loss = dataclasses.replace(cfg.loss, drw_epoch=scaled(cfg.loss.drw_epoch, 0))
    return new


def warn_cut_schedule(cfg: Config) -> None:
    """Warn when a step schedule's milestones lie at or beyond ``optim.epochs`` (an
    ``optim.epochs`` set without ``--epochs``, which would have scaled them)."""
    o = cfg.optim
    late = [m for m in o.milestones if m >= o.epochs]
    if o.schedule == "step" and late:
        warnings.warn(
            f"optim.milestones {late} lie at or beyond optim.epochs={o.epochs}: the rate never "
            f"decays there; --epochs {o.epochs} scales the whole schedule (milestones, DRW) "
            "instead of cutting it",
            stacklevel=3,
        )
