"""A user's own features (``ncollapse analyze --features FILE.npz``): a careful reader and the
collapse metrics, cosine plot and summary written from them.

The reader looks at each array's header before loading it, so a file that is not an ``.npz``
archive, an array of Python objects, a truncated member or labels that would imply an absurd
number of classes are refused with one sentence naming the problem and the fix, before any
large allocation.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import UserError
from ..folders import check_output_folder, make_output_folder
from ..jsonsafe import dumps
from ..metrics import collapse_metrics, default_tail_classes

__all__ = ["MAX_FEATURE_CLASSES", "FeatureArrays", "analyze_features", "read_features"]

#: most classes (largest label + 1) a features file may have: the metrics hold K x K cosines
MAX_FEATURE_CLASSES = 10_000
#: above this many classes the cosine-matrix PNG is skipped (one pixel a class pair at best)
MAX_PLOT_CLASSES = 1_000
ARRAYS = ("features", "labels", "classifier", "bias")
SAVE_HINT = "np.savez('f.npz', features=F, labels=y)"


@dataclass
class FeatureArrays:
    """Checked arrays of a features file: ``features`` (N, d) float64, ``labels`` (N,) int64,
    optional ``classifier`` (K, d) and ``bias`` (K,), and K."""

    features: np.ndarray
    labels: np.ndarray
    classifier: np.ndarray | None
    bias: np.ndarray | None
    num_classes: int


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every ``.npy`` member, read from the headers only."""
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise UserError(
            f"{path} is a single NumPy array (.npy); --features needs an .npz archive with "
            f"arrays 'features' and 'labels': {SAVE_HINT}"
        )
    if not magic.startswith(b"PK"):
        raise UserError(f"{path} is not an .npz archive; save your arrays with {SAVE_HINT}")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name not in ARRAYS:
                    continue
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    header_end = member.tell()
                if dtype.hasobject:
                    raise UserError(
                        f"{path}: array '{name}' holds Python objects (dtype object), which are "
                        f"not loaded for safety; save numbers, e.g. np.asarray({name}, "
                        f"dtype=np.float32)"
                    )
                if math.prod(shape) * dtype.itemsize > info.file_size - header_end:
                    raise UserError(
                        f"{path}: array '{name}' is truncated (its header promises shape "
                        f"{shape}); write the file again with {SAVE_HINT}"
                    )
                out[name] = (tuple(shape), dtype)
    except UserError:
        raise
    except Exception as exc:  # zipfile, zlib and header errors of a damaged archive
        raise UserError(f"{path} is not a readable .npz archive ({exc}); {SAVE_HINT}") from None
    return out


def _load(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: np.asarray(z[name]) for name in names}
    except Exception as exc:  # any damage the headers did not reveal
        raise UserError(f"{path} is not a readable .npz archive ({exc}); {SAVE_HINT}") from None


def _real(arr: np.ndarray, name: str, path: Path, ndim: int, shape_text: str) -> np.ndarray:
    if arr.ndim != ndim:
        raise UserError(f"{path}: array '{name}' must be {shape_text}, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise UserError(
            f"{path}: array '{name}' must hold real numbers, got dtype {arr.dtype}; convert it "
            f"with np.asarray({name}, dtype=np.float32)"
        )
    if kind == "f" and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr)
        where = f" (first in row {int(np.argwhere(bad)[0][0])})" if arr.ndim > 0 else ""
        raise UserError(
            f"{path}: array '{name}' has {int(bad.sum())} NaN or inf values{where}; drop or "
            f"impute them first, e.g. keep = np.isfinite({name}).all(axis=1)"
        )
    return arr


def read_features(path: str | Path) -> FeatureArrays:
    """Read and check a features ``.npz``: ``features`` (N, d) real and finite, ``labels`` (N,)
    class indices 0..K-1, optional ``classifier`` (K, d) and ``bias`` (K,). Every problem is a
    :class:`~ncollapse.errors.UserError` naming the array and the fix."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"features file {path} is a folder; give the .npz file inside it")
    if not path.exists():
        raise UserError(f"features file {path} does not exist")
    if not path.is_file():  # /dev/zero, a pipe, a socket
        raise UserError(f"features file {path} is not a regular file; give an .npz file")
    headers = _headers(path)
    for key in ("features", "labels"):
        if key not in headers:
            raise UserError(
                f"{path}: missing array '{key}' (found: {', '.join(headers) or 'none'}); "
                f"{SAVE_HINT}"
            )
    arrays = _load(path, list(headers))
    feats = _real(arrays["features"], "features", path, 2, "(N, d)")
    n, d = feats.shape
    if n == 0 or d == 0:
        raise UserError(f"{path}: array 'features' is empty, shape {feats.shape}")
    labels = _real(arrays["labels"], "labels", path, 1, f"1-D with one label per row ({n},)")
    if labels.shape[0] != n:
        raise UserError(
            f"{path}: array 'labels' must be 1-D with one label per feature row ({n}), "
            f"got shape {labels.shape}"
        )
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise UserError(f"{path}: array 'labels' must hold integers, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise UserError(f"{path}: array 'labels' has negative values; labels are class indices")
    top = int(labels.max())
    classifier = arrays.get("classifier")
    if classifier is not None:
        classifier = _real(classifier, "classifier", path, 2, "(K, d)")
        if classifier.shape[1] != d or classifier.shape[0] <= top:
            raise UserError(
                f"{path}: array 'classifier' must be (K, d) = (K > {top}, {d}), got shape "
                f"{classifier.shape}"
            )
    k = classifier.shape[0] if classifier is not None else top + 1
    if k > MAX_FEATURE_CLASSES:
        what = (
            f"array 'classifier' has {k} rows"
            if classifier is not None
            else f"array 'labels' goes up to {top}, i.e. {k} classes"
        )
        raise UserError(
            f"{path}: {what}; at most {MAX_FEATURE_CLASSES} classes are supported. Labels must "
            f"be class indices 0..K-1: remap them with "
            f"labels = np.unique(labels, return_inverse=True)[1]"
        )
    bias = arrays.get("bias")
    if bias is not None:
        bias = _real(bias, "bias", path, 1, f"({k},)")
        if bias.shape != (k,):
            raise UserError(f"{path}: array 'bias' must be ({k},), got shape {bias.shape}")
    labels = labels.astype(np.int64)
    if int((np.bincount(labels, minlength=k) > 0).sum()) < 2:
        raise UserError(f"{path}: need samples of at least two classes")
    return FeatureArrays(
        features=feats.astype(np.float64),
        labels=labels,
        classifier=None if classifier is None else classifier.astype(np.float64),
        bias=None if bias is None else bias.astype(np.float64),
        num_classes=k,
    )


def _tail(
    tail_classes: Sequence[int] | None, train_counts: Sequence[int] | None, k: int
) -> list[int] | None:
    if tail_classes is not None and train_counts is not None:
        raise UserError("give the tail classes or the training class counts, not both")
    if train_counts is not None:
        counts = [int(c) for c in train_counts]
        if len(counts) != k or any(c < 0 for c in counts):
            raise UserError(
                f"training class counts must be {k} non-negative numbers (one per class), "
                f"got {len(counts)}"
            )
        return default_tail_classes(counts)
    if tail_classes is None:
        return None
    tail = sorted({int(t) for t in tail_classes})
    if not tail or tail[0] < 0 or tail[-1] >= k:
        raise UserError(f"tail classes must be class indices in [0, {k}), got {tail_classes!r}")
    return tail


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def analyze_features(
    npz_path: str | Path,
    out_dir: str | Path,
    tail_classes: Sequence[int] | None = None,
    train_counts: Sequence[int] | None = None,
) -> dict:
    """Collapse metrics of a user's own features (see :func:`read_features` for the file).

    The minority-collapse indices use ``tail_classes``, or the default tail of the training
    counts ``train_counts`` (one per class), or else the default tail of the label counts of
    the file itself (right for training-set features, wrong for a balanced test set). Writes
    ``features_metrics.json``, ``features_cosine.png`` (up to 1000 classes) and
    ``features_analysis.md`` to ``out_dir``; returns the metrics.
    """
    from .plots import plot_cosine_matrices
    from .runs import Run

    path = Path(npz_path)
    out = check_output_folder(out_dir, "the output folder", "give --out DIR")
    fa = read_features(path)
    k = fa.num_classes
    tail = _tail(tail_classes, train_counts, k)
    metrics = collapse_metrics(fa.features, fa.labels, classifier=fa.classifier, bias=fa.bias,
                               num_classes=k, tail_classes=tail)  # fmt: skip
    make_output_folder(out)
    atomic_write_bytes(out / "features_metrics.json", dumps(metrics, indent=1).encode())
    files = [out / "features_metrics.json"]
    counts = np.bincount(fa.labels, minlength=k)
    png = None
    if k <= MAX_PLOT_CLASSES:
        means = np.zeros((k, fa.features.shape[1]))
        np.add.at(means, fa.labels, fa.features)
        means /= np.maximum(counts, 1)[:, None]
        state = {"class_means": means, "class_counts": counts}
        if fa.classifier is not None:
            state["classifier"] = fa.classifier
        pseudo = Run(path=path, name=path.stem, method="features", state=state)
        png = plot_cosine_matrices([pseudo], out / "features_cosine.png")
        if png:
            files.append(png)
    n, d = fa.features.shape
    lines = [f"# Collapse metrics of {path.name}", "", f"N = {n}, d = {d}, K = {k}", ""]
    lines += [f"Tail classes: {metrics['tail_classes']}", ""]
    lines += ["| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(v)} |" for key, v in metrics.items() if not isinstance(v, list)]
    if png:
        lines += ["", f"![cosines]({png.name})"]
    elif k > MAX_PLOT_CLASSES:
        lines += ["", f"(no cosine plot: {k} classes, more than {MAX_PLOT_CLASSES})"]
    atomic_write_bytes(out / "features_analysis.md", ("\n".join(lines) + "\n").encode())
    files.append(out / "features_analysis.md")
    return {"metrics": metrics, "out_dir": str(out), "files": [str(f) for f in files]}
