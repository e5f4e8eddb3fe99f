"""What every loss shares: the loss registry, the context a builder gets, and the helpers of
the losses (class counts, the mixup rule). The calling contract the engine uses is
:class:`ncollapse.criterion.Criterion` (re-exported here).

A loss is added with one file and one registry line, which also declares the config keys the
loss reads and what it needs of the rest of the config::

    @register_loss("my_loss", options={"loss.my_weight": option(1.0, "my_loss: its weight")})
    def build(ctx: LossContext) -> Criterion: ...

(``docs/architecture.md``, "Adding a loss", has a complete example.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config, Option
from ..criterion import Batch, Criterion
from ..registry import Registry

__all__ = [
    "LOSSES",
    "Batch",
    "Counts",
    "Criterion",
    "LossContext",
    "log_prior",
    "register_loss",
]

Counts = Sequence[int] | Tensor


@dataclass
class LossContext:
    """What a loss builder gets from the composition layer: the whole config (it reads its own
    section, e.g. ``cfg.loss`` and ``cfg.allnc``), the network (backbone + head; its ``head``
    and ``classifier_weight()``), the training class counts and the training labels."""

    cfg: Any
    network: nn.Module
    class_counts: list[int]
    train_labels: Tensor


#: loss name (``loss.name``) -> builder ``(LossContext) -> Criterion``
LOSSES: Registry[Callable[[LossContext], Criterion]] = Registry("loss", "loss.name", config=Config)


def register_loss(
    name: str,
    *,
    options: dict[str, Option] | None = None,
    requires: dict[str, Any] | None = None,
    check: Callable[[Any], None] | None = None,
    default: bool = False,
    **info: Any,
) -> Callable[[Callable[[LossContext], Criterion]], Any]:
    """Decorator: register a builder ``(LossContext) -> Criterion`` as ``loss.name=name``.

    ``options``: the config keys the loss reads (``{"loss.tau": option(1.0, "...")}``), added to
    the config with their type, default and meaning; ``requires``: what it needs of other keys
    (``{"model.head": "etf"}``; ``why="..."`` says why in the error); ``check(cfg)``: any further
    test (a ConfigError, or a warning); ``default``: the loss of a config that names none."""
    return LOSSES.register(
        name, options=options, requires=requires, check=check, default=default, **info
    )


def _counts(class_counts: Counts, name: str = "class_counts") -> Tensor:
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if c.numel() < 1 or bool((c <= 0).any()):
        raise ValueError(
            f"{name} must be a non-empty list of positive counts, got {class_counts!r}"
        )
    return c


def log_prior(class_counts: Counts) -> Tensor:
    """``log(n_j / N)`` as a float64 tensor of shape (K,)."""
    c = _counts(class_counts)
    return torch.log(c / c.sum())


def _mix(
    fn: Callable[[Tensor], Tensor], target: Tensor, target_b: Tensor | None, lam: float
) -> Tensor:
    """``lam * fn(target) + (1 - lam) * fn(target_b)`` (just ``fn(target)`` without a partner)."""
    if target_b is None:
        return fn(target)
    return lam * fn(target) + (1.0 - lam) * fn(target_b)
