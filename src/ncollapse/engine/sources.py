"""Where the engine's batches come from: resident uint8 tensors or a streaming dataset, the whole
global batch or one data-parallel rank's share of it.

- Resident data (:class:`~ncollapse.data.ArrayDataset`) stays on the device; every rank builds
  the same global batch (order, augmentation and mixup drawn from ``(seed, epoch)``, see
  :class:`~ncollapse.engine.batches.ResidentBatches`) and :class:`ShardedBatches` keeps its
  contiguous share.
- Streaming data (:class:`~ncollapse.data.StreamingDataset`, ``resident = False``) is decoded by
  DataLoader workers (``data.workers``), each sample's augmentation drawn from
  ``(seed, epoch, index)``; :class:`StreamingBatches` draws the same epoch order as the resident
  path, and under DDP each rank loads only its share. Mixup then pairs samples within a rank's
  share (the coefficient is the same on every rank).
- :class:`Splits` gives the evaluation batches of a split (each rank its contiguous share).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..criterion import Batch
from ..data import make_loader
from ..data.augment import BatchAugment
from ..data.base import DataBundle
from ..errors import UserError
from .batches import ResidentBatches, StepInput, epoch_order
from .distributed import SINGLE, Distributed, shard_bounds, shard_sizes
from .evaluate import resident_batches
from .mixup import mixup_batch
from .state import epoch_generators

__all__ = ["ShardedBatches", "Splits", "StreamingBatches", "steps_per_epoch"]


def steps_per_epoch(n: int, batch_size: int, dist: Distributed) -> int:
    """Global batches per epoch. A last batch that would leave a process fewer than 2 samples is
    skipped (BatchNorm cannot train on one; DDP cannot step on none)."""
    full, tail = divmod(n, batch_size)
    return full + int(tail >= 2 * (dist.world_size if dist.enabled else 1) or full == 0)


def _check_global_batch(batch_size: int, dist: Distributed) -> None:
    if dist.enabled and batch_size % dist.world_size:
        raise UserError(
            f"optim.batch_size={batch_size} is the global batch, split evenly over the "
            f"{dist.world_size} processes: it must be divisible by {dist.world_size} (e.g. "
            f"--set optim.batch_size={batch_size - batch_size % dist.world_size})"
        )
    if dist.enabled and batch_size < 2 * dist.world_size:
        raise UserError(
            f"optim.batch_size={batch_size} leaves each of the {dist.world_size} processes "
            f"{batch_size // dist.world_size} sample(s) a step; BatchNorm cannot train on one: "
            f"use --set optim.batch_size={2 * dist.world_size} or more"
        )


class ShardedBatches:
    """This rank's share of :class:`ResidentBatches`' global steps (the global batch is built,
    augmented and mixed identically on every rank, then cut into contiguous shares)."""

    def __init__(self, inner: ResidentBatches, dist: Distributed) -> None:
        self.inner = inner
        self.dist = dist

    def __len__(self) -> int:
        return steps_per_epoch(self.inner.images.shape[0], self.inner.batch_size, self.dist)

    def epoch(
        self, epoch: int, seed: int, mixup_alpha: float, start: int = 0
    ) -> Iterator[StepInput]:
        steps = self.inner.epoch(epoch, seed, mixup_alpha, start=start)
        for _, step in zip(range(start, len(self)), steps):
            sizes = shard_sizes(step.size, self.dist.world_size)
            lo, hi = shard_bounds(step.size, self.dist.world_size, self.dist.rank)
            b = step.batch
            mine = Batch(b.y[lo:hi], None if b.y_b is None else b.y_b[lo:hi], b.lam)
            extra = {k: (x[lo:hi], y[lo:hi]) for k, (x, y) in step.extra.items()}
            whole_extra = {k: y for k, (_, y) in step.extra.items()}
            yield StepInput(step.x[lo:hi], mine, extra, step.size, sizes, b, whole_extra)


class StreamingBatches:
    """Training steps from a streaming dataset through DataLoader workers.

    The epoch order is :func:`~ncollapse.engine.batches.epoch_order` from the epoch's generator
    (the resident path's order); each rank loads its contiguous share of every global batch;
    images arrive normalised and augmented (per sample, from ``(seed, epoch, index)``), in pinned
    memory on CUDA. Mixup: one coefficient per global batch from the epoch's NumPy generator, the
    partners a permutation within each rank's share.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        workers: int,
        device: torch.device,
        memory_format: torch.memory_format = torch.preserve_format,
        balanced_from: float | None = None,
        dist: Distributed = SINGLE,
    ) -> None:
        _check_global_batch(batch_size, dist)
        self.dataset = dataset
        self.labels = torch.as_tensor(dataset.labels).cpu()
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.device = device
        self.memory_format = memory_format
        self.balanced_from = balanced_from
        self.dist = dist

    def __len__(self) -> int:
        return steps_per_epoch(len(self.labels), self.batch_size, self.dist)

    def order(self, epoch: int, g: torch.Generator) -> torch.Tensor:
        return epoch_order(self.labels, epoch, g, self.balanced_from)

    def _skip(self, idx: torch.Tensor, mixup_alpha: float, g: torch.Generator, rng: Any) -> None:
        """The random draws of a step already trained (a resume inside the epoch), without
        loading its images."""
        if mixup_alpha <= 0:
            return
        rng.beta(mixup_alpha, mixup_alpha)
        if not self.dist.enabled:
            torch.randperm(idx.numel(), generator=g)
            return
        for n in shard_sizes(idx.numel(), self.dist.world_size):
            torch.randperm(n, generator=g)

    def epoch(
        self, epoch: int, seed: int, mixup_alpha: float, start: int = 0
    ) -> Iterator[StepInput]:
        """The steps of 0-based ``epoch`` from step ``start`` on: a resume inside the epoch
        loads only the images of the steps left (each sample's augmentation depends on
        ``(seed, epoch, index)`` alone) and replays the earlier steps' mixup draws."""
        g, rng = epoch_generators(seed, epoch)
        perm = self.order(epoch, g)
        world, rank, bs = self.dist.world_size, self.dist.rank, self.batch_size
        steps = [perm[b * bs : (b + 1) * bs] for b in range(len(self))]
        mine = [idx[slice(*shard_bounds(len(idx), world, rank))] for idx in steps]
        for idx in steps[:start]:
            self._skip(idx, mixup_alpha, g, rng)
        steps, mine = steps[start:], mine[start:]
        if not steps:
            return
        loader = make_loader(
            self.dataset, torch.cat(mine), bs // world, self.workers, True, seed, epoch
        )
        dev = self.device
        for idx, (x, y) in zip(steps, loader):
            x = x.to(dev, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = y.to(dev, non_blocking=True)
            if not self.dist.enabled:
                x, y_a, y_b, lam = mixup_batch(x, y, mixup_alpha, g, rng)
                yield StepInput(x, Batch(y_a, y_b, lam), {}, idx.numel())
                continue
            sizes = shard_sizes(idx.numel(), world)
            y_all = self.labels[idx]
            y_b_all, lam = y_all, 1.0
            if mixup_alpha > 0:
                lam = float(rng.beta(mixup_alpha, mixup_alpha))
                perms = [torch.randperm(n, generator=g) for n in sizes]
                parts = y_all.split(sizes)
                y_b_all = torch.cat([p[q] for p, q in zip(parts, perms)])
                own_perm = perms[rank].to(dev)
                x = lam * x + (1.0 - lam) * x[own_perm]
            lo, hi = shard_bounds(idx.numel(), world, rank)
            y_b = y_b_all[lo:hi].to(dev)
            whole = Batch(y_all.to(dev), y_b_all.to(dev), lam)
            yield StepInput(x, Batch(y, y_b, lam), {}, idx.numel(), sizes, whole)


class Splits:
    """The bundle's splits as the engine reads them: resident ones moved to the device once,
    streaming ones through DataLoader workers; each rank reads its contiguous share."""

    def __init__(
        self,
        data: DataBundle,
        device: torch.device,
        *,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None,
        memory_format: torch.memory_format,
        workers: int,
        dist: Distributed = SINGLE,
    ) -> None:
        self.resident = data.resident
        self.device = device
        self.normalize = normalize
        self.memory_format = memory_format
        self.workers = int(workers)
        self.dist = dist
        self.datasets = {"train": data.train, "test": data.test}
        if getattr(data, "val", None) is not None:
            self.datasets["val"] = data.val
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.resident:
            for name, ds in self.datasets.items():
                self.tensors[name] = (ds.images.to(device), ds.labels.to(device))

    def train_batches(
        self,
        augment: BatchAugment | None,
        *,
        batch_size: int,
        extra_weights: dict[str, torch.Tensor],
        balanced_from: float | None,
        without_extra: str = "",
    ) -> ResidentBatches | ShardedBatches | StreamingBatches:
        """The training steps (this rank's share of every global batch)."""
        _check_global_batch(batch_size, self.dist)
        if not self.resident:
            if extra_weights:
                raise UserError(
                    f"the loss asks for extra batches ({', '.join(extra_weights)}), which only "
                    "in-memory data can serve; streamed list-file data cannot (train it with "
                    + (f"{without_extra}, or with " if without_extra else "")
                    + "another loss)"
                )
            return StreamingBatches(
                self.datasets["train"],
                batch_size=batch_size,
                workers=self.workers,
                device=self.device,
                memory_format=self.memory_format,
                balanced_from=balanced_from,
                dist=self.dist,
            )
        x, y = self.tensors["train"]
        assert augment is not None, "resident data needs its batch augmentation"
        batches = ResidentBatches(
            x,
            y,
            augment,
            batch_size=batch_size,
            memory_format=self.memory_format,
            extra_weights=extra_weights,
            balanced_from=balanced_from,
        )
        return ShardedBatches(batches, self.dist) if self.dist.enabled else batches

    def eval_batches(
        self, split: str, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(images, labels)`` of this rank's share of ``split``, in order, without
        augmentation (the evaluation transform for streaming data)."""
        ds = self.datasets[split]
        lo, hi = shard_bounds(len(ds), self.dist.world_size, self.dist.rank)
        if self.resident:
            xs, ys = self.tensors[split]
            if self.dist.enabled:
                xs, ys = xs[lo:hi], ys[lo:hi]
            assert self.normalize is not None
            yield from resident_batches(xs, ys, self.normalize, batch_size, self.memory_format)
            return
        loader = make_loader(ds, range(lo, hi), batch_size, self.workers, False, 0, 0)
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)
