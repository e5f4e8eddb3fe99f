"""Per-sample image transforms for streaming datasets, with torchvision's documented semantics
(torchvision itself is not a dependency), driven by an explicit NumPy generator.

- :func:`random_resized_crop`: ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))``:
  up to 10 attempts at an area fraction uniform in ``scale`` and a log-uniform aspect ratio; the
  first box that fits is cut at a uniform position; after 10 misses, the centre crop clamped to
  the ratio range. The box is resized to ``size x size`` (bilinear, antialiased by Pillow).
- :func:`color_jitter`: ``ColorJitter(brightness, contrast, saturation)``: each factor uniform
  in ``[max(0, 1 - v), 1 + v]``, applied in a random order with Pillow's ``ImageEnhance`` (the
  functions torchvision calls on PIL images).
- :func:`flip`: horizontal mirror with probability 0.5.
- :func:`eval_resize_crop`: ``Resize(int(size / crop_fraction))`` of the shorter side, then
  ``CenterCrop(size)`` (0.875: 256 -> 224).
- :func:`to_normalized`: ``ToTensor`` + ``Normalize(mean, std)``: float32 (C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .resize import centre_box, shorter_side_size

__all__ = [
    "color_jitter",
    "eval_resize_crop",
    "flip",
    "random_resized_crop",
    "rrc_box",
    "to_normalized",
    "train_transform",
]


def rrc_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """The ``(top, left, h, w)`` box of RandomResizedCrop for a ``width x height`` image."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_r[0], log_r[1]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(im: Any, size: int, rng: np.random.Generator, **kw: Any) -> Any:
    """A PIL image cut by :func:`rrc_box` and resized to ``size x size`` (bilinear)."""
    from PIL import Image

    top, left, h, w = rrc_box(im.size[0], im.size[1], rng, **kw)
    return im.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def color_jitter(
    im: Any, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4
) -> Any:
    """Brightness, contrast and saturation jitter in a random order (PIL ``ImageEnhance``)."""
    from PIL import ImageEnhance

    ops = []
    for v, enh in (
        (brightness, ImageEnhance.Brightness),
        (contrast, ImageEnhance.Contrast),
        (saturation, ImageEnhance.Color),
    ):
        if v:
            ops.append((enh, rng.uniform(max(0.0, 1.0 - v), 1.0 + v)))
    for k in rng.permutation(len(ops)):
        enh, factor = ops[k]
        im = enh(im).enhance(factor)
    return im


def flip(im: Any, rng: np.random.Generator) -> Any:
    """Horizontal mirror with probability 0.5."""
    from PIL import Image

    return im.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im


def eval_resize_crop(im: Any, size: int, crop_fraction: float = 0.875) -> Any:
    """Shorter side to ``int(size / crop_fraction)`` (bilinear), then the centre ``size`` square."""
    from PIL import Image

    w, h = im.size
    nw, nh = shorter_side_size(w, h, int(size / crop_fraction))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    return im.crop(centre_box(nw, nh, size, size))


def to_normalized(im: Any, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL image -> float32 (C, H, W) tensor ``(x / 255 - mean) / std``."""
    a = np.array(im, dtype=np.uint8)  # a writable copy
    if a.ndim == 2:
        a = a[:, :, None]
    x = torch.from_numpy(a).permute(2, 0, 1).contiguous().to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    # (x/255 - m)/s == x * (1/(255 s)) - m/s, computed as BatchAugment.normalize does
    return x.mul_(1.0 / (255.0 * s)).sub_(m / s)


def train_transform(im: Any, size: int, rng: np.random.Generator, jitter: float = 0.4) -> Any:
    """The ImageNet training recipe: RandomResizedCrop, horizontal flip, colour jitter."""
    im = random_resized_crop(im, size, rng)
    im = flip(im, rng)
    return color_jitter(im, rng, jitter, jitter, jitter) if jitter else im
