"""The official per-epoch learning-rate schedule: linear warm-up, then step decays (SPEC section 5)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lr_at_epoch"]


def lr_at_epoch(
    epoch: int,
    base_lr: float,
    warmup_epochs: int = 5,
    milestones: Sequence[int] = (160, 180),
    gamma: float = 0.1,
) -> float:
    """Learning rate for 0-based ``epoch``, fixed for the whole epoch.

    Epochs ``0..warmup_epochs-1`` ramp linearly: ``base_lr * (epoch + 1) / warmup_epochs``; after
    that the rate is ``base_lr * gamma**m`` where ``m`` counts the milestones ``<= epoch``. With
    the defaults this is 0.1 * (e+1)/5 for e < 5, 0.1 until epoch 160, 0.01 until 180, then 0.001.
    """
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    passed = sum(1 for m in milestones if epoch >= m)
    return base_lr * gamma**passed
