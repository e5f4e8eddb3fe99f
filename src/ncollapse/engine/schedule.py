"""The official per-epoch learning-rate schedule: linear warm-up, then step decays (SPEC section 5)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lr_at_epoch", "ramps_per_batch"]


def ramps_per_batch(epoch: int, warmup_epochs: float) -> bool:
    """Whether ``epoch`` lies in a fractional warm-up, whose rate changes with every batch."""
    return epoch < warmup_epochs and not float(warmup_epochs).is_integer()


def lr_at_epoch(
    epoch: int,
    base_lr: float,
    warmup_epochs: float = 5,
    milestones: Sequence[int] = (160, 180),
    gamma: float = 0.1,
    progress: float = 1.0,
) -> float:
    """Learning rate for 0-based ``epoch``.

    A warm-up of whole epochs ramps once per epoch (the official schedule): epochs
    ``0..warmup_epochs-1`` get ``base_lr * (epoch + 1) / warmup_epochs``. A fractional warm-up
    (a shortened schedule: 5 of 200 epochs is 0.5 of 20) ramps with every batch:
    ``base_lr * min(1, (epoch + progress) / warmup_epochs)``, ``progress`` in (0, 1] the share of
    the epoch done after the current batch. After the warm-up the rate is ``base_lr * gamma**m``
    where ``m`` counts the milestones ``<= epoch``. With the defaults: 0.1 * (e+1)/5 for e < 5,
    0.1 until epoch 160, 0.01 until 180, then 0.001.
    """
    if ramps_per_batch(epoch, warmup_epochs):
        return base_lr * min(1.0, (epoch + progress) / warmup_epochs)
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    passed = sum(1 for m in milestones if epoch >= m)
    return base_lr * gamma**passed
