"""Optimisers by name: ``optim.optimizer`` -> ``make(params, optim) -> torch.optim.Optimizer``.

``sgd`` (the default, the official recipe: momentum, weight decay on every parameter, optional
Nesterov) and ``adamw`` (decoupled weight decay). Another optimiser is one more entry, with the
``optim.*`` keys only it reads::

    @OPTIMIZERS.register("rmsprop", options={"optim.alpha": option(0.99, "rmsprop: smoothing")})
    def rmsprop(params, optim):
        return torch.optim.RMSprop(params, lr=optim.lr, alpha=optim.alpha)

The rate set here is the peak rate; the schedule (:mod:`.schedule`) sets every step's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..config import INF, Config, option
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["OPTIMIZERS", "build_optimizer"]

Params = Iterable[torch.nn.Parameter]

#: optimiser name (``optim.optimizer``) -> ``make(params, optim)``
OPTIMIZERS: Registry[Callable[[Params, Any], torch.optim.Optimizer]] = Registry(
    "optimizer", "optim.optimizer", config=Config
)


def build_optimizer(params: Params, optim: Any) -> torch.optim.Optimizer:
    """The optimiser ``optim.optimizer`` names, over ``params``, from the ``optim`` section."""
    return OPTIMIZERS.get(optim.optimizer)(params, optim)


@OPTIMIZERS.register(
    "sgd",
    default=True,
    options={
        "optim.momentum": option(0.9, "momentum", range=(0, 1, "[)")),
        "optim.nesterov": option(False, "Nesterov momentum"),
    },
)
def sgd(params: Params, optim: Any) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (the official recipe)."""
    return torch.optim.SGD(
        params,
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        nesterov=optim.nesterov,
    )


def _betas(key: str, value: list[float]) -> None:
    if len(value) != 2 or not all(0 <= b < 1 for b in value):
        raise ConfigError(f"{key} takes two numbers in [0, 1), e.g. [0.9, 0.999]; got {value}")


@OPTIMIZERS.register(
    "adamw",
    options={
        "optim.betas": option(
            [0.9, 0.999],
            "the decay rates of the first and second moment estimates",
            type=list[float],
            check=_betas,
        ),
        "optim.eps": option(
            1e-8, "added to the denominator for numerical stability", range=(0, INF, "()")
        ),
    },
)
def adamw(params: Params, optim: Any) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient."""
    return torch.optim.AdamW(
        params,
        lr=optim.lr,
        betas=(float(optim.betas[0]), float(optim.betas[1])),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
