"""In-memory datasets and the bundle every loader returns (see docs/architecture.md, "Data")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..errors import DataError

__all__ = ["ArrayDataset", "DataBundle", "Split"]


class Split(Protocol):
    """What every split of a bundle offers: an :class:`ArrayDataset`, or a dataset that streams
    from files (:class:`~ncollapse.data.stream.StreamingDataset`)."""

    labels: torch.Tensor
    classes: list[str]
    resident: bool

    def __len__(self) -> int: ...


class ArrayDataset(torch.utils.data.Dataset):
    """Images as one uint8 tensor ``(N, C, H, W)``, labels as int64 ``(N,)``, class names.

    Indexing returns ``(image_uint8, label)``; the engine normally slices the tensors directly
    (``ds.images[idx]``) and augments whole batches with :class:`~ncollapse.data.augment.BatchAugment`.
    """

    #: the whole dataset is in memory as uint8 (the engine slices and augments whole batches);
    #: :class:`~ncollapse.data.stream.StreamingDataset` has ``resident = False``
    resident = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"ArrayDataset images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"ArrayDataset labels must be 1-D with one label per image: {tuple(labels.shape)} vs {images.shape[0]} images"
            )
        labels = labels.to(torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DataError(
                f"labels must lie in [0, {len(classes)}) for {len(classes)} classes, "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        self.images = images
        self.labels = labels
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Images per class in label order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, classes={len(self.classes)})"


@dataclass
class DataBundle:
    """What :func:`ncollapse.data.load_data` returns.

    ``class_counts``: training images per class (label order). ``info``: provenance (source path,
    subset seed, imbalance, profile, capped classes, ...), JSON-serialisable. ``mean``/``std``:
    per-channel normalisation on the 0..1 scale. ``augment``: the default augmentation for this
    data (``"standard"`` crop+flip for CIFAR, ``"none"`` for digits, ``"stream"`` when the
    datasets are streaming and transform each sample themselves). ``val``: the validation set
    (``data.val``), or None.

    ``train``/``test``/``val`` are :class:`ArrayDataset` (``resident = True``) or, for data that
    does not fit in memory, :class:`~ncollapse.data.stream.StreamingDataset` (``resident = False``,
    read through :func:`~ncollapse.data.stream.make_loader`).
    """

    train: Split
    test: Split
    class_counts: list[int]
    info: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    augment: str = "none"
    val: Split | None = None

    @property
    def resident(self) -> bool:
        """Whether the splits are in-memory :class:`ArrayDataset` s."""
        return bool(getattr(self.train, "resident", True))

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def in_channels(self) -> int:
        return int(self._shape()[0])

    @property
    def image_size(self) -> tuple[int, int]:
        c_h_w = self._shape()
        return int(c_h_w[1]), int(c_h_w[2])

    def describe(self) -> str:
        """One line: the training images per class it holds (first class, last class, total,
        K) and where they came from (a long-tail subset and its settings, or as given)."""
        counts, names, info = list(self.class_counts), list(self.classes), self.info
        src = info.get("source") or info.get("name") or "the data"
        if info.get("format") == "listfile":
            how = f"as listed in {info.get('lists', {}).get('train', src)} (no long-tail subset)"
        elif "imbalance" in info:
            r = float(info["imbalance"])
            how = (
                f"a long-tailed subset of {src}: {info.get('profile', 'exp')} profile, "
                f"data.imbalance = {r:g} (imbalance ratio {1 / r:g}), subset seed "
                f"{info.get('subset_seed', 0)}"
            )
            if info.get("capped") and r < 1:
                how += f", {len(info['capped'])} class(es) below the profile keep all they have"
        else:
            how = (
                f"every training image of {src}, as given (no long-tail subset; set "
                "data.imbalance for one)"
            )
        return (
            f"training on {sum(counts):,} images of {len(counts)} classes (first class "
            f"{names[0]!r}: {counts[0]:,}, last class {names[-1]!r}: {counts[-1]:,}), {how}"
        )

    def _shape(self) -> tuple[int, int, int]:
        if hasattr(self.train, "images"):
            return tuple(self.train.images.shape[1:])  # type: ignore[return-value]
        return tuple(self.train.sample_shape)
