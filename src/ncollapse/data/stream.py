"""Datasets that do not fit in memory: list files as in ImageNet-LT / iNaturalist-2018, decoded
on the fly by DataLoader workers (``data.name: listfile``).

A list file has one ``<relative path> <label>`` per line (blank lines and ``#`` comments
skipped; the path may contain spaces, the label is the last field); paths are relative to
``data.root``. The lists are used as given: no long-tail subsetting (ImageNet-LT's training
list already is long-tailed). ``data.val_list`` gives the validation set.

The engine reads a :class:`StreamingDataset` (``resident = False``) through :func:`make_loader`,
which returns a DataLoader yielding ``(float32 (B, 3, S, S) normalised images, int64 labels)``.
Every random number of sample ``i`` comes from ``numpy.random.default_rng([seed, epoch, i])``,
so a batch holds the same tensors whatever the number of workers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import option
from ..errors import DataError
from .base import DataBundle
from .registry import register_dataset
from .resize import check_size
from .split import check_val_options
from .transforms import eval_resize_crop, to_normalized, train_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "StreamingDataset",
    "load_listfile",
    "make_loader",
    "read_list",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_LABEL = re.compile(r"[0-9]{1,18}")  # ASCII digits; int64 holds every such label


def read_list(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(relative paths, int64 labels)`` of a ``<path> <label>`` list file; a file that is
    not UTF-8 text or holds a line without a label >= 0 is refused naming the line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"list file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the list file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: the list file is not UTF-8 text; "
            "save it as UTF-8 (one '<relative path> <label>' per line)"
        ) from None
    files: list[str] = []
    labels: list[int] = []
    for n, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.rsplit(maxsplit=1)
        if len(parts) != 2 or not _LABEL.fullmatch(parts[1]):
            raise DataError(
                f"{path}:{n}: expected '<relative path> <label>' with a label >= 0 (digits "
                f"0-9), got {s[:200]!r}"
            )
        files.append(parts[0])
        labels.append(int(parts[1]))
    if not files:
        raise DataError(f"list file {path} holds no '<relative path> <label>' lines")
    return files, np.asarray(labels, dtype=np.int64)


def check_list_labels(read: dict[str, tuple[list[str], np.ndarray]], paths: dict[str, str]) -> int:
    """The number of classes of the lists (largest label + 1), refusing lists in which a class
    has no training line (a gap in the labels, or a label only the test or validation list
    has) or that hold fewer than two classes; checked on the labels alone, before anything of
    the size of the class count is made."""
    present = np.unique(read["train"][1])
    top, where = max((int(y.max()), name) for name, (_f, y) in read.items())
    k = top + 1
    if len(present) == k and k >= 2:
        return k
    train = paths["train"]
    if k < 2:
        raise DataError(
            f"the list files hold one class only (label 0, in {train}): a classifier needs at "
            "least two classes; label the classes 0..K-1"
        )
    have, missing = set(present.tolist()), []
    for c in range(k):  # the first few absent labels (k may be huge: stop early)
        if c not in have:
            missing.append(c)
            if len(missing) == 8:
                break
    absent = k - len(present)
    shown = ", ".join(map(str, missing)) + (
        f" and {absent - len(missing)} more" if absent > 8 else ""
    )
    raise DataError(
        f"labels go up to {top} (in the {where} list {paths[where]}), so there are {k} classes, "
        f"but the training list {train} has no line of class{'es' if absent > 1 else ''} "
        f"{shown} ({absent} of {k} classes "
        "without a training image, which would be trained and scored all the same): number the "
        "classes 0..K-1, every one of them in the training list"
    )


class StreamingDataset(torch.utils.data.Dataset):
    """Images listed by path, decoded and transformed per sample (RGB, ``size x size``).

    ``labels`` (int64 tensor), ``classes``, ``sample_shape`` ``(3, size, size)``. ``train``
    selects the transform of ``__getitem__``: RandomResizedCrop + flip + colour jitter, or the
    evaluation resize + centre crop; :func:`make_loader` sets it, with ``seed`` and ``epoch``, on
    a copy. ``__getitem__(i) -> (float32 (3, size, size) normalised tensor, int label)``.
    """

    resident = False

    def __init__(
        self,
        root: str | Path,
        files: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        train: bool = False,
        jitter: float = 0.4,
        crop_fraction: float = 0.875,
    ) -> None:
        self.root = Path(root).expanduser()
        self.files = list(files)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if len(self.files) != len(self.labels):
            raise DataError(f"{len(self.files)} files but {len(self.labels)} labels")
        self.classes = list(classes)
        if len(self.labels) and int(self.labels.max()) >= len(self.classes):
            raise DataError(
                f"labels reach {int(self.labels.max())} but there are {len(classes)} classes"
            )
        self.size = int(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.train, self.jitter, self.crop_fraction = bool(train), float(jitter), crop_fraction
        self.seed, self.epoch = 0, 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def view(self, train: bool, seed: int = 0, epoch: int = 0) -> StreamingDataset:
        """A shallow copy with the transform mode and the (seed, epoch) of its randomness."""
        v = copy.copy(self)
        v.train, v.seed, v.epoch = bool(train), int(seed), int(epoch)
        return v

    def load(self, i: int) -> Any:
        """Image ``i`` as an RGB PIL image (a :class:`DataError` names an unreadable file)."""
        from PIL import Image, UnidentifiedImageError

        path = self.root / self.files[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        im = self.load(i)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            im = train_transform(im, self.size, rng, self.jitter)
        else:
            im = eval_resize_crop(im, self.size, self.crop_fraction)
        return to_normalized(im, self.mean, self.std), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"StreamingDataset(n={len(self)}, size={self.size}, classes={len(self.classes)}, "
            f"root={str(self.root)!r})"
        )


def make_loader(
    dataset: StreamingDataset,
    indices: Iterable[int] | torch.Tensor | None,
    batch_size: int,
    workers: int,
    train: bool,
    seed: int,
    epoch: int,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` in the order of ``indices`` (None: all, in order).

    ``train`` picks the augmentation (else the evaluation transform); sample ``i``'s randomness
    is ``default_rng([seed, epoch, i])``, so the batches do not depend on ``workers`` (0: decode in
    the calling process). Memory is pinned when CUDA is available.
    """
    if indices is None:
        order = list(range(len(dataset)))
    elif isinstance(indices, torch.Tensor):
        order = indices.tolist()
    else:
        order = [int(i) for i in indices]
    workers = max(0, int(workers))
    return torch.utils.data.DataLoader(
        dataset.view(train, seed, epoch),
        batch_size=int(batch_size),
        sampler=order,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        multiprocessing_context=_worker_context() if workers else None,
    )


def _worker_context() -> Any:
    """How DataLoader workers start. In a data-parallel run (torchrun), from a fork server:
    forking a worker from a rank whose gloo threads may hold a lock at that instant can leave the
    worker waiting forever on its copy of the lock, and the run then hangs in its next collective
    (seen once in the test suite). The server preloads this module (torch with it), so workers
    start quickly; like any fork-server or spawn start, it imports the caller's main module in
    each worker, so a torchrun script needs an ``if __name__ == "__main__"`` guard
    (docs/distributed.md). Single-process runs keep the platform's default (fork on Linux), which
    imposes no guard."""
    import multiprocessing

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _list_path(p: str, root: Path) -> Path:
    q = Path(p).expanduser()
    return q if q.is_file() or q.is_absolute() else (root / q if (root / q).is_file() else q)


@register_dataset(
    "listfile",
    options={
        "data.train_list": option(
            None, 'the training list: "<relative path> <label>" per line', type=str | None
        ),
        "data.test_list": option(None, "the test list (same format)", type=str | None),
        "data.val_list": option(None, "an optional validation list (same format)", type=str | None),
    },
    imbalance=None,  # used as given
)
def load_listfile(cfg: Any) -> DataBundle:
    """``data.name: listfile``: ``data.root`` + ``data.train_list`` / ``test_list`` (+ ``val_list``)."""
    if not cfg.root or not getattr(cfg, "train_list", None) or not getattr(cfg, "test_list", None):
        raise DataError(
            "data.name=listfile needs data.root (the image folder) and data.train_list / "
            "data.test_list ('<relative path> <label>' per line)"
        )
    mode, _n, _s = check_val_options(cfg)
    if mode == "unused":
        raise DataError(
            "data.val=unused needs a long-tail subset; list files are used as given: "
            "give the validation list as data.val_list"
        )
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    size = check_size(getattr(cfg, "size", None)) or 224
    lists = {"train": cfg.train_list, "test": cfg.test_list}
    if getattr(cfg, "val_list", None):
        lists["val"] = cfg.val_list
    read = {k: read_list(_list_path(v, root)) for k, v in lists.items()}
    k = check_list_labels(read, {n: str(_list_path(v, root)) for n, v in lists.items()})
    classes = [str(c) for c in range(k)]
    for name, (files, _y) in read.items():
        for f in files[:10]:
            if not (root / f).is_file():
                raise DataError(f"{name} list names {f}, not found under data.root {root}")
    ds = {
        name: StreamingDataset(root, files, y, classes, size, train=(name == "train"))
        for name, (files, y) in read.items()
    }
    counts = ds["train"].class_counts()
    info = {
        "name": "listfile",
        "source": str(root),
        "format": "listfile",
        "lists": {n: str(_list_path(v, root)) for n, v in lists.items()},
        "note": "list files used as given (no long-tail subsetting)",
        "train_counts": counts,
        "test_counts": ds["test"].class_counts(),
        "size": size,
        "val": {"mode": "list" if "val" in ds else "none"},
        "val_counts": ds["val"].class_counts() if "val" in ds else None,
    }
    return DataBundle(
        ds["train"], ds["test"], counts, info, IMAGENET_MEAN, IMAGENET_STD, "stream", ds.get("val")
    )
