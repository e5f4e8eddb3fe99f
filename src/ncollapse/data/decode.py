"""Decoding encoded images (JPEG, PNG, ...) into one uint8 array, in worker processes when
there are many: the step every image source shares (folders, archives), with ``data.size``'s
fitting (:mod:`ncollapse.data.resize`) applied as each image is decoded."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..errors import DataError
from .resize import fit_image

__all__ = ["SIZE_HINT", "decode_images"]

#: how to train on images of several sizes
SIZE_HINT = (
    "set data.size to fit every image to one square size, e.g. --set data.size=32 "
    "(shorter side scaled to 32, centre 32x32 kept)"
)


def _decode_chunk(
    items: list[tuple[str, bytes]], mode: str | None, size: int | None = None
) -> tuple[np.ndarray | None, str | None, str | None]:
    """Decode ``(name, bytes)`` pairs into (n, H, W, C) uint8, fitted to ``size x size`` when
    given (:func:`~ncollapse.data.resize.fit_image`); on failure (None, name, reason)."""
    from PIL import Image, UnidentifiedImageError

    out: list[np.ndarray] = []
    shape = None
    for name, data in items:
        try:
            with Image.open(io.BytesIO(data)) as im:
                m = mode or ("L" if im.mode in ("L", "1", "I", "I;16", "F") else "RGB")
                a = np.asarray(fit_image(im.convert(m), size), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            return None, name, f"{type(e).__name__}: {e}"
        if a.ndim == 2:
            a = a[:, :, None]
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            return (
                None,
                name,
                (
                    f"size {a.shape[1]}x{a.shape[0]} differs from {shape[1]}x{shape[0]} of the "
                    f"other images; {SIZE_HINT}"
                ),
            )
        out.append(a)
    if not out:
        return np.zeros((0, 1, 1, 1), np.uint8), None, None
    return np.stack(out), None, None


def decode_images(
    items: list[tuple[str, bytes]],
    mode: str | None = None,
    workers: int | None = None,
    size: int | None = None,
) -> np.ndarray:
    """Decode encoded images to one uint8 array (N, C, H, W), in order.

    ``mode``: ``"RGB"``/``"L"`` or None (from the first image). ``workers``: processes (default: 2
    when there are more than 4,000 images and 2+ CPUs). ``size``: fit every image to
    ``size x size`` (shorter side, then centre crop; see :mod:`ncollapse.data.resize`), so
    sources of mixed sizes decode too. Without it, a file that does not decode, or whose size
    differs from the others, raises :class:`DataError` naming it.
    """
    if not items:
        raise DataError("no images to decode")
    if mode is None:
        first, name, why = _decode_chunk(items[:1], None)
        if first is None:
            raise DataError(f"cannot decode image {name}: {why}")
        mode = "L" if first.shape[-1] == 1 else "RGB"
    if workers is None:
        workers = 2 if len(items) > 4000 and (os.cpu_count() or 1) >= 2 else 1
    n_chunks = max(1, workers * 4) if workers > 1 else 1
    step = -(-len(items) // n_chunks)
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with warnings.catch_warnings(), ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with torch threads alive
            n = len(chunks)
            results = list(ex.map(_decode_chunk, chunks, [mode] * n, [size] * n))
    else:
        results = [_decode_chunk(c, mode, size) for c in chunks]
    arrays = []
    for arr, name, why in results:
        if arr is None:
            raise DataError(f"cannot decode image {name}: {why}")
        arrays.append(arr)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w, _c in sorted(shapes))
        raise DataError(f"images differ in size ({sizes}); {SIZE_HINT}")
    return np.ascontiguousarray(np.concatenate(arrays).transpose(0, 3, 1, 2))
