"""Pure tensor math for simplex equiangular tight frames (docs/method.md).

No ``nn``, no I/O: everything here is a function of its arguments.
"""

from __future__ import annotations

import math

import torch

__all__ = ["etf_gram", "etf_gram_error", "simplex_etf"]


def _check_dims(dim: int, num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got num_classes={num_classes!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"feature dimension must be a positive integer, got dim={dim!r}")
    if dim < num_classes - 1:
        raise ValueError(
            f"no simplex ETF of {num_classes} classes exists in {dim} dimensions: it needs "
            f"dim >= num_classes - 1 = {num_classes - 1}. Use a wider feature (for the CIFAR "
            f"ResNets, a larger width), or add a learnable projection to at least "
            f"{num_classes - 1} dimensions before the head."
        )


def simplex_etf(
    dim: int,
    num_classes: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return a random simplex ETF as a ``(dim, num_classes)`` tensor (column k is vertex m_k).

    The columns are unit vectors with pairwise cosine ``-1/(K-1)`` and sum to zero. The frame
    is a deterministic function of ``seed`` (drawn from its own CPU generator, so the global RNG
    is untouched); move it to a device with ``.to(device)``.

    For ``dim >= K`` this is the official construction: ``sqrt(K/(K-1)) P (I - 11^T/K)`` with
    ``P`` the orthonormalised columns of a Gaussian ``dim x K`` matrix. For ``dim = K - 1`` the
    frame is built inside the (K-1)-dimensional subspace orthogonal to the all-ones vector and
    rotated into ``R^dim`` by a random orthogonal matrix. ``dim < K - 1`` raises ``ValueError``:
    no simplex ETF exists there.
    """
    _check_dims(dim, num_classes)
    k = num_classes
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    centring = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if dim >= k:
        p, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
        frame = math.sqrt(k / (k - 1)) * p @ centring
    else:  # dim == k - 1: an orthonormal basis U of 1^perp in R^K, then a random rotation B
        ones_first = torch.cat(
            [
                torch.ones(k, 1, dtype=torch.float64),
                torch.randn(k, k - 1, generator=gen, dtype=torch.float64),
            ],
            dim=1,
        )
        q, _ = torch.linalg.qr(ones_first)
        u = q[:, 1:]  # K x (K-1), orthonormal, orthogonal to the all-ones vector
        b, _ = torch.linalg.qr(torch.randn(dim, k - 1, generator=gen, dtype=torch.float64))
        frame = math.sqrt(k / (k - 1)) * b @ u.T
    return frame.to(dtype)


def etf_gram(num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Gram matrix of a unit simplex ETF: ``(1 + 1/(K-1)) I - 1/(K-1) 11^T``."""
    k = num_classes
    off = 1.0 / (k - 1)
    return (1.0 + off) * torch.eye(k, dtype=dtype) - off * torch.ones(k, k, dtype=dtype)


def etf_gram_error(frame: torch.Tensor) -> float:
    """Largest absolute deviation of ``frame^T frame`` (columns as vertices) from :func:`etf_gram`."""
    f = frame.detach().to(torch.float64).cpu()
    return float((f.T @ f - etf_gram(f.shape[1])).abs().max())
