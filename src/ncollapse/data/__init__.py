"""Data: long-tail subsetting, readers (digits, CIFAR, SVHN, STL-10, MNIST, Fashion-MNIST, image
folders, list files), caches, batched augmentation and streaming. Every loader returns a
:class:`DataBundle` (see docs/data.md); :data:`DATASETS` lists the names ``load_data`` accepts."""

from __future__ import annotations

import copy
from typing import Any

from ..config import Config

# the reader modules register their loaders on import
from . import cifar as _cifar  # noqa: F401  (cifar10, cifar100; imports imagefolder)
from . import digits as _digits  # noqa: F401
from . import mnist as _mnist  # noqa: F401  (mnist, fashion_mnist)
from . import svhn as _svhn  # noqa: F401  (svhn, stl10)
from .augment import AUGMENTS, BatchAugment, make_augment
from .base import ArrayDataset, DataBundle
from .digits import load_digits_lt
from .longtail import (
    PROFILES,
    check_training_classes,
    long_tail_counts,
    long_tail_indices,
    long_tail_subset,
)
from .registry import (
    DATASETS,
    PROTOCOL_IMBALANCE,
    dataset_names,
    default_imbalance,
    get_loader,
    register_dataset,
)
from .split import VAL_MODES, check_val_options, unused_validation_indices
from .stream import StreamingDataset, make_loader  # registers listfile

# the values of the data keys these modules implement
Config.set_choices("data.profile", PROFILES)
Config.set_choices("data.augment", ("auto", *AUGMENTS))
Config.set_choices("data.val", VAL_MODES)

__all__ = [
    "DATASETS",
    "PROTOCOL_IMBALANCE",
    "VAL_MODES",
    "ArrayDataset",
    "BatchAugment",
    "DataBundle",
    "StreamingDataset",
    "dataset_names",
    "default_imbalance",
    "load_data",
    "load_digits_lt",
    "long_tail_counts",
    "long_tail_indices",
    "long_tail_subset",
    "make_augment",
    "make_loader",
    "register_dataset",
    "unused_validation_indices",
]


def load_data(cfg: Any) -> DataBundle:
    """Load the dataset a :class:`~ncollapse.config.DataConfig` names (``cfg.name``, looked up in
    :data:`DATASETS`), long-tailed as configured; an unknown name gets the closest valid one.

    ``cfg.imbalance`` None is the dataset's own default (:func:`default_imbalance`): the
    benchmarks' long-tail protocol, or, for image folders and list files, every image as given.
    """
    loader = get_loader(cfg.name)
    check_val_options(cfg)  # fail on a bad data.val before any decoding
    if getattr(cfg, "imbalance", None) is None:
        r = default_imbalance(cfg.name)
        if r is not None:
            cfg = copy.copy(cfg)
            cfg.imbalance = r
    bundle = loader(cfg)
    check_training_classes(bundle.class_counts, bundle.classes)  # none empty, at least two
    return bundle
