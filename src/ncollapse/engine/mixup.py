"""Mixup (Zhang et al., 2018) as the official recipes use it: one lam per batch."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MixDraws", "apply_mixup", "draw_mixup", "mixup_batch"]

#: one batch's mixup numbers: ``(lam, partner permutation)`` (:func:`draw_mixup`)
MixDraws = tuple[float, torch.Tensor]


def draw_mixup(
    n: int,
    alpha: float,
    generator: torch.Generator,
    rng: np.random.Generator,
    device: torch.device | str | None = None,
) -> MixDraws | None:
    """``(lam ~ Beta(alpha, alpha) from rng, a permutation of n from generator)`` in that order,
    the permutation moved to ``device``; None for ``alpha <= 0`` (mixup off: nothing drawn)."""
    if alpha <= 0:
        return None
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(n, generator=generator)
    return lam, perm if device is None else perm.to(device)


def apply_mixup(
    x: torch.Tensor, y: torch.Tensor, draws: MixDraws | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``(lam * x + (1 - lam) * x[perm], y, y[perm], lam)`` for :func:`draw_mixup`'s numbers;
    ``(x, y, y, 1.0)`` without them."""
    if draws is None:
        return x, y, y, 1.0
    lam, perm = draws
    perm = perm.to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, y, y[perm], lam


def mixup_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Return ``(lam * x + (1 - lam) * x[perm], y, y[perm], lam)`` with ``lam ~ Beta(alpha, alpha)``.

    ``alpha <= 0`` turns mixup off (``lam = 1``, the partner labels equal the labels). The
    permutation comes from ``generator`` (a CPU generator, so CPU and CUDA runs agree) and
    ``lam`` from ``rng``; both are seeded by the engine per epoch, which makes resumed runs exact.
    """
    return apply_mixup(x, y, draw_mixup(x.shape[0], alpha, generator, rng))
