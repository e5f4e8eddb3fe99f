"""The criterion contract between the losses and the engine (one calling convention for all).

The engine knows no loss. It calls ``criterion(batch, out) -> loss`` with

- ``out``: the network's :class:`~ncollapse.heads.HeadOutput` ``(features, logits)`` on the
  (possibly mixed) training batch, in float32;
- ``batch``: a :class:`Batch` with the labels ``y``, the mixup partner labels ``y_b`` and
  coefficient ``lam`` (``y_b`` equals ``y`` and ``lam`` is 1 without mixup), and ``extra``: for
  every extra batch the criterion asked for (:attr:`Criterion.sampling_weights`), its
  ``(HeadOutput, labels)``;

and ``set_epoch(epoch)`` at the start of every epoch, ``state_dict()`` / ``load_state_dict()``
for what a checkpoint must carry, and ``to(device)``. :class:`Criterion` gives harmless defaults
for all but the call. Losses live in :mod:`ncollapse.losses` and are built by name from its
registry by the composition layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from .heads import HeadOutput

__all__ = ["Batch", "Criterion"]


@dataclass
class Batch:
    """A training step's labels, as a criterion sees them (see the module docstring)."""

    y: Tensor
    y_b: Tensor | None = None
    lam: float = 1.0
    extra: dict[str, tuple[HeadOutput, Tensor]] = field(default_factory=dict)


class Criterion:
    """The contract the engine calls; subclasses implement :meth:`__call__`.

    ``sampling_weights``: for each extra batch the criterion needs (name -> per-sample weights
    over the training set, drawn with replacement), e.g. AllNC's class-reversed batch. The engine
    draws those batches, forwards them with the main one and hands their outputs over in
    ``batch.extra[name]``. ``without_extra``: how a user trains this criterion without them (an
    option to pass), named in the error when the data cannot serve extra batches.
    """

    sampling_weights: Mapping[str, Tensor] = MappingProxyType({})  # none by default
    without_extra: str = ""

    def __call__(self, batch: Batch, out: HeadOutput) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine at the start of every (0-based) epoch."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must carry to resume exactly (empty: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def to(self, device: torch.device | str) -> Criterion:
        """Move the criterion's tensors and modules to ``device``."""
        return self
