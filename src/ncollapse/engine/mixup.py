"""Mixup (Zhang et al., 2018) as the official recipes use it: one lam per batch."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mixup_batch"]


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
    if alpha <= 0:
        return x, y, y, 1.0
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, y, y[perm], lam
