"""An exponential moving average of a network's weights and BatchNorm statistics.

After every optimiser step, each floating-point parameter and buffer ``a`` of the average moves
towards the network's ``x``: ``a <- a + (1 - d) (x - a)`` with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates (the usual warm-up of the decay, so an average started late is not dominated
by its first weights). Integer buffers (BatchNorm's batch counter) are copied. A buffer that never
changes, such as the fixed ETF frame, stays bit-identical. Evaluating the average instead of the
last weights is one of the cheapest gains of short schedules (Polyak averaging; used by the
CIFAR-10 speed records).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running average of ``network`` (a separate copy, in eval mode)."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(network).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def _pairs(self, network: nn.Module):
        mine = dict(self.module.state_dict(keep_vars=True))
        for name, x in network.state_dict(keep_vars=True).items():
            yield mine[name], x

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        self.blend(network, self.weight(self.updates))
        self.updates += 1

    def weight(self, updates: int) -> float:
        """The share of the network's weights in the update after ``updates`` updates."""
        return 1.0 - min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def blend(self, network: nn.Module, weight: float | torch.Tensor) -> None:
        """One step of the average with the network's share ``weight`` (a number, or a 0-dim
        tensor on the device, read there: the captured step's), without counting it."""
        floats_a, floats_x = [], []
        for a, x in self._pairs(network):
            if a.is_floating_point():
                floats_a.append(a.data)
                floats_x.append(x.data)
            else:
                a.data.copy_(x.data)
        if not floats_a:
            return
        if isinstance(weight, torch.Tensor):  # no foreach overload reads one tensor weight
            torch._foreach_lerp_(floats_a, floats_x, [weight] * len(floats_a))
        else:
            torch._foreach_lerp_(floats_a, floats_x, weight)

    @torch.no_grad()
    def reset(self, network: nn.Module) -> None:
        """Start the average again from ``network``'s current weights."""
        self.module.load_state_dict(network.state_dict())
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
