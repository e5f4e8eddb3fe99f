"""Batched augmentation on any device: random crop with zero padding, horizontal flip, normalise.

:class:`BatchAugment` reproduces torchvision's ``RandomCrop(size, padding=p)`` +
``RandomHorizontalFlip()`` + ``ToTensor()`` + ``Normalize(mean, std)`` on whole uint8 batches
with tensor indexing (no per-sample Python): padding is pixel value 0 of the *raw* image, i.e.
applied before normalisation, exactly as RandomCrop on a PIL image does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["AUGMENTS", "BatchAugment", "CropDraws", "make_augment"]

#: one batch's crop offsets and flips: ``(dy, dx, flip or None)`` (:meth:`BatchAugment.draw`)
CropDraws = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]

AUGMENTS = ("standard", "none")


class BatchAugment:
    """``aug(x_uint8, generator) -> float normalised batch`` (same shape as ``x``).

    Per sample: a crop offset ``(dy, dx)`` uniform in ``[0, 2 * crop_padding]`` of the zero-padded
    image (output size = input size) and, if ``flip``, a horizontal mirror with probability 0.5.
    Random numbers are drawn in the order dy, dx, flip from ``generator`` (on the generator's
    device, then moved), so a seeded generator gives the same batch on CPU and GPU.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one value per channel: {mean} vs {std}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"BatchAugment(mean={self.mean}, std={self.std}, crop_padding={self.crop_padding}, "
            f"flip={self.flip})"
        )

    def _stats(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            m = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
            # (x/255 - m)/s == x * (1/(255 s)) - m/s
            self._cache[key] = (1.0 / (255.0 * s), m / s)
        return self._cache[key]

    def normalize(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (B, C, H, W) -> ``(x / 255 - mean) / std`` as ``dtype`` (for evaluation)."""
        if x.shape[1] != len(self.mean):
            raise ValueError(f"batch has {x.shape[1]} channels but mean/std have {len(self.mean)}")
        scale, shift = self._stats(x.device, dtype)
        return x.to(dtype) * scale - shift

    def _rand(self, high: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        gdev = generator.device if generator is not None else device
        return torch.randint(0, high, (n,), generator=generator, device=gdev).to(device)

    def draw(
        self, n: int, generator: torch.Generator | None = None, device=None
    ) -> CropDraws | None:
        """The random numbers of one batch of ``n`` images, ``(dy, dx, flip)`` (``flip`` None
        without flips; None when the augmentation draws nothing), drawn in that order from
        ``generator`` and moved to ``device`` (default: the generator's). :meth:`crop_flip` is
        ``apply(x, draw(len(x), generator, x.device))``; a caller may draw a whole epoch's numbers
        first and apply them later (the captured step of :mod:`ncollapse.engine.graphs`)."""
        p = self.crop_padding
        if p == 0 and not self.flip:
            return None
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        if p > 0:
            dy = self._rand(2 * p + 1, n, generator, device)
            dx = self._rand(2 * p + 1, n, generator, device)
        else:
            dy = dx = torch.zeros(n, dtype=torch.long, device=device)
        flip = self._rand(2, n, generator, device).bool() if self.flip else None
        return dy, dx, flip

    def apply(self, x: torch.Tensor, draws: CropDraws | None) -> torch.Tensor:
        """The crop and flip of :meth:`draw`'s numbers (on ``x``'s device) on the uint8 batch
        ``x`` (returns uint8). Only tensor operations of fixed shapes: capturable in a CUDA
        graph."""
        if draws is None:
            return x
        dy, dx, flip = draws
        b, _c, h, w = x.shape
        p = self.crop_padding
        dev = x.device
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="constant", value=0) if p else x
        rows = dy[:, None] + torch.arange(h, device=dev)[None, :]  # (B, H)
        cols = dx[:, None] + torch.arange(w, device=dev)[None, :]  # (B, W)
        if flip is not None:
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        bidx = torch.arange(b, device=dev)[:, None, None]
        # advanced indices separated by the channel slice -> result (B, H, W, C)
        out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def crop_flip(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The random crop and flip alone, on the uint8 batch (returns uint8)."""
        return self.apply(x, self.draw(x.shape[0], generator, x.device))

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        return self.normalize(self.crop_flip(x, generator), dtype)


def make_augment(kind: str, mean: Sequence[float], std: Sequence[float]) -> BatchAugment:
    """``standard``: crop with 4-pixel zero padding + flip; ``none``: normalisation only."""
    if kind == "standard":
        return BatchAugment(mean, std, crop_padding=4, flip=True)
    if kind == "none":
        return BatchAugment(mean, std, crop_padding=0, flip=False)
    raise ValueError(f"unknown augmentation {kind!r}; valid: {', '.join(AUGMENTS)}")
