"""``data.size``: one square image size for any source, applied when images are decoded.

The rule, everywhere (image folders, archives, array formats, streaming evaluation): scale the
*shorter* side to ``size`` keeping the aspect ratio (the longer side becomes
``int(size * long / short)``, as torchvision's ``Resize(size)``), with Pillow's bilinear filter
(antialiased when shrinking), then cut the centre ``size x size`` square (top/left offset
``round((h - size) / 2)``, as ``CenterCrop``). A square source is a plain resize; an image
already ``size x size`` is left untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["check_size", "fit_image", "resize_array", "shorter_side_size"]


def check_size(size: Any) -> int | None:
    """``data.size`` as an int >= 1, or None (keep the source size)."""
    if size is None:
        return None
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise DataError(f"data.size must be a positive integer (pixels) or null, got {size!r}")
    return int(size)


def shorter_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    """``(new_w, new_h)`` with the shorter side ``size`` and the aspect ratio kept."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def centre_box(w: int, h: int, cw: int, ch: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of a centred ``cw x ch`` crop of a ``w x h`` image."""
    top = round((h - ch) / 2.0)
    left = round((w - cw) / 2.0)
    return left, top, left + cw, top + ch


def fit_image(im: Any, size: int | None) -> Any:
    """A PIL image scaled (shorter side) and centre-cropped to ``size x size``; as is for None."""
    if size is None or im.size == (size, size):
        return im
    from PIL import Image

    w, h = im.size
    nw, nh = shorter_side_size(w, h, size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    return im.crop(centre_box(nw, nh, size, size)) if (nw, nh) != (size, size) else im


def resize_array(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` to ``(N, C, size, size)`` with :func:`fit_image` on every image
    (a no-op when they are already that size)."""
    if size is None or images.shape[2:] == (size, size):
        return images
    from PIL import Image

    n, c = images.shape[:2]
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        a = images[i].transpose(1, 2, 0)
        im = Image.fromarray(a[:, :, 0] if c == 1 else a)
        b = np.asarray(fit_image(im, size), dtype=np.uint8)
        out[i] = b[None] if b.ndim == 2 else b.transpose(2, 0, 1)
    return out
