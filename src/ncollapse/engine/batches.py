"""Where the training batches come from: resident uint8 tensors, augmented as whole batches.

Every epoch's randomness (order, crops, flips, mixup, extra batches) comes from generators seeded
by ``(seed, epoch)`` alone (:func:`~ncollapse.engine.state.epoch_generators`), so a resumed run
draws exactly what the uninterrupted run drew. The draws happen in a fixed order per batch: the
augmentation of the batch, mixup, then each extra batch and its augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..criterion import Batch
from ..data.augment import BatchAugment, CropDraws
from .mixup import MixDraws, apply_mixup, draw_mixup
from .state import epoch_generators

__all__ = ["BatchDraws", "ResidentBatches", "StepInput", "epoch_order", "not_resident_alone"]


@dataclass
class StepInput:
    """One training step's input: the (mixed) images, the criterion's labels, the extra batches'
    images and labels, and how many samples the step counts for (the global batch's size).

    Data-parallel steps hold this rank's share of ``x``, ``batch`` and ``extra``, and also
    ``shards`` (every rank's number of samples, in rank order), ``whole`` (the global batch's
    labels, partner labels and mixup coefficient) and ``whole_extra`` (the global extra batches'
    labels), which a criterion that sees the global batch needs.
    """

    x: torch.Tensor
    batch: Batch
    extra: dict[str, tuple[torch.Tensor, torch.Tensor]]
    size: int
    shards: list[int] | None = None
    whole: Batch | None = None
    whole_extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class BatchDraws:
    """Everything random about one training step, in the order it is drawn: the sample indices
    (a slice of the epoch's order), the crop and flip of the batch, its mixup numbers (None
    without mixup), then each extra batch's indices and crop and flip."""

    idx: torch.Tensor
    crop: CropDraws | None
    mix: MixDraws | None
    extra: dict[str, tuple[torch.Tensor, CropDraws | None]] = field(default_factory=dict)


def epoch_order(
    labels: torch.Tensor, epoch: int, g: torch.Generator, balanced_from: float | None = None
) -> torch.Tensor:
    """The epoch's sample order on the CPU (``labels`` on the CPU): a permutation, or from epoch
    ``balanced_from`` on a class-balanced draw with replacement (deferred re-sampling)."""
    n = labels.shape[0]
    if balanced_from is not None and epoch >= balanced_from:
        counts = torch.bincount(labels).to(torch.float64)
        weights = (1.0 / counts[labels]).to(torch.float32)
        return torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.randperm(n, generator=g)


class ResidentBatches:
    """Batches of a training set held on the device as uint8 ``images`` and int64 ``labels``.

    ``extra_weights``: per-sample weights of the extra batches a criterion asks for (drawn with
    replacement, one extra batch of the same size per step). ``balanced_from``: from this epoch
    on, the epoch's samples are drawn class-balanced with replacement (deferred re-sampling).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: BatchAugment,
        *,
        batch_size: int,
        memory_format: torch.memory_format = torch.preserve_format,
        extra_weights: dict[str, torch.Tensor] | None = None,
        balanced_from: float | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment
        self.batch_size = int(batch_size)
        self.memory_format = memory_format
        self.extra_weights = dict(extra_weights or {})
        self.balanced_from = balanced_from
        self.device = images.device

    def __len__(self) -> int:
        """Batches per epoch: a last batch of a single sample is skipped (BatchNorm cannot train
        on one; the sample is drawn again in a later epoch's order)."""
        full, tail = divmod(self.images.shape[0], self.batch_size)
        return full + int(tail >= 2 or full == 0)

    def order(self, epoch: int, g: torch.Generator) -> torch.Tensor:
        """The epoch's sample order (:func:`epoch_order`), on the device."""
        return epoch_order(self.labels.cpu(), epoch, g, self.balanced_from).to(self.device)

    def draws(
        self, epoch: int, seed: int, mixup_alpha: float, device: torch.device | None = None
    ) -> Iterator[BatchDraws]:
        """The random numbers of every step of 0-based ``epoch``, batch by batch, with the
        per-batch numbers on ``device`` (default: the training device). :meth:`epoch` applies
        them as they come; the captured step (:mod:`.graphs`) draws a whole epoch first."""
        g, rng = epoch_generators(seed, epoch)
        perm = self.order(epoch, g)
        bs = self.batch_size
        dev = self.device if device is None else device
        for b in range(len(self)):
            idx = perm[b * bs : (b + 1) * bs]
            n = idx.numel()
            crop = self.augment.draw(n, g, dev)
            mix = draw_mixup(n, mixup_alpha, g, rng, dev)
            extra = {}
            for name, weights in self.extra_weights.items():
                eidx = torch.multinomial(weights, n, replacement=True, generator=g).to(dev)
                extra[name] = (eidx, self.augment.draw(n, g, dev))
            yield BatchDraws(idx, crop, mix, extra)

    def prepare(self, idx: torch.Tensor, crop: CropDraws | None) -> torch.Tensor:
        """The normalised, augmented batch of the samples ``idx`` (in the run's memory format)."""
        x = self.augment.normalize(self.augment.apply(self.images[idx], crop))
        return x.contiguous(memory_format=self.memory_format)

    def epoch(
        self, epoch: int, seed: int, mixup_alpha: float, start: int = 0
    ) -> Iterator[StepInput]:
        """The steps of 0-based ``epoch``, from step ``start`` on (a resume inside the epoch:
        the earlier steps' random numbers are drawn and dropped, so the later ones are those of
        the uninterrupted epoch)."""
        for b, d in enumerate(self.draws(epoch, seed, mixup_alpha)):
            if b < start:
                continue
            x = self.prepare(d.idx, d.crop)
            x, y_a, y_b, lam = apply_mixup(x, self.labels[d.idx], d.mix)
            extra = {
                name: (self.prepare(eidx, crop), self.labels[eidx])
                for name, (eidx, crop) in d.extra.items()
            }
            yield StepInput(x, Batch(y_a, y_b, lam), extra, d.idx.numel())


def not_resident_alone(trainer: Any) -> str | None:
    """Why a trainer's steps are not plain :class:`ResidentBatches` in one process, in a few
    words (None: they are), which the captured step (:mod:`.graphs`) and a pack of runs
    (:mod:`.pack`) need: data-parallel, streamed data, or extra batches."""
    if trainer.dist.enabled:
        return "the run is data-parallel under torchrun"
    if not isinstance(trainer.batches, ResidentBatches):
        return "the data streams through DataLoader workers"
    if trainer.batches.extra_weights:
        return f"the loss draws extra batches ({', '.join(trainer.batches.extra_weights)})"
    return None
