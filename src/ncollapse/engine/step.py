"""One training step's forward pass and loss, in one process or data-parallel.

One process: the network's output on the batch (and the extra batches, forwarded together with
it) goes to the criterion as it is.

Data-parallel (``docs/distributed.md``), two ways, chosen by ``run.loss_batch``:

- ``local``: the criterion sees this rank's share, as DistributedDataParallel code computes a loss
  (the dot-regression loss's per-batch class weights then come from the share's labels). DDP
  averages the gradients, which for a loss that is a mean over the batch is the one-process
  gradient when the shares are equal; a smaller last share is weighted by its size.
- ``global``: the outputs of every rank's share are all-gathered, and the criterion sees the whole
  global batch with its labels, exactly as in one process (class weights from the global batch,
  a loss's running state, such as a class-mean memory, updated from the global batch, the same on
  every rank). The gradient
  flows back to each rank's own rows (:func:`~ncollapse.engine.distributed.gather_shards`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..criterion import Batch, Criterion
from .batches import StepInput
from .distributed import Distributed, gather_shards

__all__ = ["forward_loss", "sees_global_batch"]


def sees_global_batch(loss_batch: str, criterion: Criterion, dist: Distributed) -> bool:
    """Whether the criterion gets the global batch (``run.loss_batch``; ``auto``: when the
    criterion carries state, which must stay the same on every rank)."""
    if not dist.enabled:
        return False
    stateful = bool(criterion.state_dict())
    if loss_batch == "local" and stateful:
        from ..errors import UserError

        raise UserError(
            "run.loss_batch=local: the loss carries state (a running class-mean memory, say) that "
            "would drift apart on the processes; use run.loss_batch=global (or auto)"
        )
    return loss_batch == "global" or (loss_batch == "auto" and stateful)


def forward_loss(
    model: nn.Module,
    criterion: Criterion,
    step: StepInput,
    *,
    amp_dtype: torch.dtype | None,
    device_type: str,
    dist: Distributed,
    global_batch: bool = False,
    autocast_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(loss to back-propagate, its share of the epoch's loss sum, the samples it counts)``.

    The epoch's mean loss is the sum over ranks of the shares divided by the samples seen.
    ``autocast_cache=False`` for a step captured in a CUDA graph (autocast's cache of the cast
    weights must not outlive the capture)."""
    x, batch, extra = step.x, step.batch, step.extra
    autocast = torch.autocast(
        device_type,
        dtype=amp_dtype,
        enabled=amp_dtype is not None,
        cache_enabled=None if autocast_cache else False,
    )
    with autocast:
        if not extra:
            out = model(x)
        else:
            sizes = [x.shape[0], *(ex[0].shape[0] for ex in extra.values())]
            both = model(torch.cat([x, *(ex[0] for ex in extra.values())]))
            parts = list(zip(*(t.split(sizes) for t in both)))
            out = type(both)(*parts[0])
            for (name, (_, y_extra)), part in zip(extra.items(), parts[1:]):
                batch.extra[name] = (type(both)(*(t.float() for t in part)), y_extra)
    out = type(out)(*(t.float() for t in out))
    if not dist.enabled:
        loss = criterion(batch, out)
        return loss, loss.detach().double() * step.size, step.size
    assert step.shards is not None and step.whole is not None
    if global_batch:
        return _global_loss(criterion, step, out, batch, dist)
    loss = criterion(batch, out)
    n = step.shards[dist.rank]
    if n * dist.world_size != step.size:  # an unequal last share: weight it by its size
        loss_bw = loss * (n * dist.world_size / step.size)
    else:
        loss_bw = loss
    return loss_bw, loss.detach().double() * n, n


def _global_loss(
    criterion: Criterion, step: StepInput, out: Any, batch: Batch, dist: Distributed
) -> tuple[torch.Tensor, torch.Tensor, int]:
    sizes, whole = step.shards, step.whole
    assert sizes is not None and whole is not None

    def gather(o: Any) -> Any:
        return type(o)(*(gather_shards(t, sizes, dist) for t in o))

    extra = {name: (gather(o), step.whole_extra[name]) for name, (o, _) in batch.extra.items()}
    loss = criterion(Batch(whole.y, whole.y_b, whole.lam, extra), gather(out))
    counted = step.size if dist.is_main else 0  # the same loss on every rank: count it once
    return loss, loss.detach().double() * counted, counted
