"""Learning-rate schedules: the official per-epoch step schedule, and the smooth schedules of
short budgets (cosine, linear decay), all with a linear warm-up (``optim.warmup_epochs=0``: none).

``optim.schedule``:

- ``step`` (the official recipe of Yang et al., 2022): warm-up, then ``lr * gamma**m``
  after the m-th milestone (or ``lr * lr_factors[m-1]`` when given, e.g. LDAM-DRW's 0.01 and
  0.0001); set once per epoch, except during a fractional warm-up;
- ``cosine``: warm-up, then a half cosine from ``lr`` to ``final_lr * lr``, set every batch;
- ``linear``: warm-up, then a straight line to ``final_lr * lr``, set every batch (the
  budget-aware schedule of Li, Yumer & Ramanan, ICLR 2020).

Each is a :class:`Schedule` in :data:`SCHEDULES`, registered with the ``optim.*`` keys it reads;
another schedule is one more entry.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import INF, Config, option, scale_epochs
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["SCHEDULES", "Schedule", "lr_at", "lr_at_epoch", "ramps_per_batch"]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: ``lr(optim, epoch, progress)``, the rate of the config's
    ``optim`` section in 0-based ``epoch`` with ``progress`` (in (0, 1]) of it done after the
    current batch, and ``per_batch(optim, epoch)``, whether the rate changes with every batch
    of that epoch (otherwise it is set once, at the start of the epoch, with ``progress=1``)."""

    lr: Callable[[Any, int, float], float]
    per_batch: Callable[[Any, int], bool]


#: schedule name (``optim.schedule``) -> :class:`Schedule`
SCHEDULES: Registry[Schedule] = Registry("schedule", "optim.schedule", config=Config)


def ramps_per_batch(epoch: int, warmup_epochs: float, schedule: str = "step") -> bool:
    """Whether the rate changes with every batch in ``epoch``: always for the smooth schedules,
    and in a fractional warm-up of the step schedule."""
    if schedule != "step":
        return True
    return epoch < warmup_epochs and not float(warmup_epochs).is_integer()


def lr_at_epoch(
    epoch: int,
    base_lr: float,
    warmup_epochs: float = 5,
    milestones: Sequence[int] = (160, 180),
    gamma: float = 0.1,
    progress: float = 1.0,
    factors: Sequence[float] | None = None,
) -> float:
    """Learning rate of the step schedule for 0-based ``epoch``.

    A warm-up of whole epochs ramps once per epoch (the official schedule): epochs
    ``0..warmup_epochs-1`` get ``base_lr * (epoch + 1) / warmup_epochs``. A fractional warm-up
    (a shortened schedule: 5 of 200 epochs is 0.5 of 20) ramps with every batch:
    ``base_lr * min(1, (epoch + progress) / warmup_epochs)``, ``progress`` in (0, 1] the share of
    the epoch done after the current batch. After the warm-up the rate is ``base_lr * gamma**m``
    (or ``base_lr * factors[m-1]``) where ``m`` counts the milestones ``<= epoch``. With the
    defaults: 0.1 * (e+1)/5 for e < 5, 0.1 until epoch 160, 0.01 until 180, then 0.001.
    """
    if ramps_per_batch(epoch, warmup_epochs):
        return base_lr * min(1.0, (epoch + progress) / warmup_epochs)
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    passed = sum(1 for m in milestones if epoch >= m)
    if factors is not None and passed:
        return base_lr * factors[min(passed, len(factors)) - 1]
    return base_lr * gamma**passed


def lr_at(optim: Any, epoch: int, progress: float = 1.0) -> float:
    """The rate of the config's ``optim`` section (see the module docstring) in 0-based
    ``epoch``, ``progress`` the share of it done after the current batch."""
    return SCHEDULES.get(optim.schedule).lr(optim, epoch, progress)


def _step_lr(optim: Any, epoch: int, progress: float) -> float:
    return lr_at_epoch(
        epoch,
        optim.lr,
        optim.warmup_epochs,
        optim.milestones,
        optim.gamma,
        progress,
        optim.lr_factors,
    )


def _smooth_lr(optim: Any, epoch: int, progress: float) -> float:
    t = epoch + progress  # epochs done after this batch
    warm = float(optim.warmup_epochs)
    if t <= warm and warm > 0:  # warmup_epochs=0: no warm-up, the decay starts at once
        return optim.lr * t / warm
    frac = min(1.0, (t - warm) / max(optim.epochs - warm, 1e-12))
    floor = optim.final_lr
    if optim.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        shape = 1.0 - frac
    return optim.lr * (floor + (1.0 - floor) * shape)


def _increasing(key: str, value: list[int]) -> None:
    if list(value) != sorted(value):
        raise ConfigError(f"{key} must be increasing, got {value}")


def _factors(key: str, value: list[float] | None) -> None:
    if value is not None and (not value or any(not (math.isfinite(f) and f > 0) for f in value)):
        raise ConfigError(f"{key} takes positive factors, one per milestone, got {value}")


def _warn_cut_schedule(cfg: Any) -> None:
    """Warn when the milestones lie at or beyond ``optim.epochs`` (an ``optim.epochs`` set
    without ``--epochs``, which would have scaled them)."""
    o = cfg.optim
    late = [m for m in o.milestones if m >= o.epochs]
    if late:
        warnings.warn(
            f"optim.milestones {late} lie at or beyond optim.epochs={o.epochs}: the rate never "
            f"decays there; --epochs {o.epochs} scales the whole schedule (milestones, DRW) "
            "instead of cutting it",
            stacklevel=3,
        )


def _warmup_shorter(cfg: Any) -> None:
    if cfg.optim.warmup_epochs >= cfg.optim.epochs:
        raise ConfigError("optim.warmup_epochs must be shorter than optim.epochs")


SCHEDULES.register(
    "step",
    Schedule(_step_lr, lambda optim, epoch: ramps_per_batch(epoch, optim.warmup_epochs)),
    default=True,
    options={
        "optim.milestones": option(
            [160, 180],
            "epochs at which the rate is multiplied by `gamma`",
            type=list[int],
            scale=scale_epochs(1),
            check=_increasing,
        ),
        "optim.gamma": option(0.1, "the factor at each milestone", range=(0, INF, "[)")),
        "optim.lr_factors": option(
            None,
            "the rate after the m-th milestone is lr * lr_factors[m-1] (None: gamma**m)",
            type=list[float] | None,
            check=_factors,
        ),
    },
    check=_warn_cut_schedule,
)
_FINAL_LR = option(0.0, "the last rate, as a fraction of lr", range=(0, 1, "[]"))
for _name in ("cosine", "linear"):
    SCHEDULES.register(
        _name,
        Schedule(_smooth_lr, lambda optim, epoch: True),
        options={"optim.final_lr": _FINAL_LR},
        check=_warmup_shorter,
    )
