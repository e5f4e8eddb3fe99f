"""Data: long-tail subsetting, readers (digits, CIFAR pickles/archives, image folders), caches,
batched augmentation. Every loader returns a :class:`DataBundle` (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from ..errors import DataError, did_you_mean
from .augment import BatchAugment, make_augment
from .base import ArrayDataset, DataBundle
from .digits import load_digits_lt
from .longtail import long_tail_counts, long_tail_indices, long_tail_subset
from .split import VAL_MODES, check_val_options, unused_validation_indices

__all__ = [
    "DATASETS",
    "VAL_MODES",
    "ArrayDataset",
    "BatchAugment",
    "DataBundle",
    "load_data",
    "load_digits_lt",
    "long_tail_counts",
    "long_tail_indices",
    "long_tail_subset",
    "make_augment",
    "unused_validation_indices",
]

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")


def load_data(cfg: Any) -> DataBundle:
    """Load the dataset a :class:`~ncollapse.config.DataConfig` names, long-tailed as configured."""
    name = cfg.name
    check_val_options(cfg)  # fail on a bad data.val before any decoding
    if name == "digits":
        return load_digits_lt(
            imbalance=cfg.imbalance,
            profile=cfg.profile,
            subset_seed=cfg.subset_seed,
            test_fraction=cfg.test_fraction,
            val=getattr(cfg, "val", "none"),
            val_per_class=getattr(cfg, "val_per_class", 1000),
            val_seed=getattr(cfg, "val_seed", 0),
        )
    if name in ("cifar10", "cifar100"):
        from .cifar import load_cifar_lt

        return load_cifar_lt(cfg)
    if name == "imagefolder":
        from .imagefolder import load_imagefolder_lt

        return load_imagefolder_lt(cfg)
    raise DataError(f"unknown dataset {name!r}" + did_you_mean(name, DATASETS))
