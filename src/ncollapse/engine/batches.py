"""Where the training batches come from: resident uint8 tensors, augmented as whole batches.

Every epoch's randomness (order, crops, flips, mixup, extra batches) comes from generators seeded
by ``(seed, epoch)`` alone (:func:`~ncollapse.engine.state.epoch_generators`), so a resumed run
draws exactly what the uninterrupted run drew. The draws happen in a fixed order per batch: the
augmentation of the batch, mixup, then each extra batch and its augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..criterion import Batch
from ..data.augment import BatchAugment
from .mixup import mixup_batch
from .state import epoch_generators

__all__ = ["ResidentBatches", "StepInput", "epoch_order"]


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

    def _prepare(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.augment(x, g).contiguous(memory_format=self.memory_format)

    def order(self, epoch: int, g: torch.Generator) -> torch.Tensor:
        """The epoch's sample order (:func:`epoch_order`), on the device."""
        return epoch_order(self.labels.cpu(), epoch, g, self.balanced_from).to(self.device)

    def epoch(
        self, epoch: int, seed: int, mixup_alpha: float, start: int = 0
    ) -> Iterator[StepInput]:
        """The steps of 0-based ``epoch``, from step ``start`` on (a resume inside the epoch:
        the earlier steps' random draws are made and dropped, so the later ones are those of
        the uninterrupted epoch)."""
        g, rng = epoch_generators(seed, epoch)
        perm = self.order(epoch, g)
        bs = self.batch_size
        for b in range(len(self)):
            idx = perm[b * bs : (b + 1) * bs]
            x = self._prepare(self.images[idx], g)
            x, y_a, y_b, lam = mixup_batch(x, self.labels[idx], mixup_alpha, g, rng)
            extra = {}
            for name, weights in self.extra_weights.items():
                eidx = torch.multinomial(weights, idx.numel(), replacement=True, generator=g)
                eidx = eidx.to(self.device)
                extra[name] = (self._prepare(self.images[eidx], g), self.labels[eidx])
            if b >= start:
                yield StepInput(x, Batch(y_a, y_b, lam), extra, idx.numel())
