"""The dataset registry behind load_data."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ncollapse.data import (
    DATASETS,
    ArrayDataset,
    DataBundle,
    dataset_names,
    load_data,
    register_dataset,
)
from ncollapse.errors import DataError


def test_builtin_names_registered():
    for name in ("digits", "cifar10", "cifar100", "imagefolder"):
        assert name in DATASETS and name in dataset_names()
    assert len(set(dataset_names())) == len(dataset_names())


def test_unknown_name_gets_closest():
    with pytest.raises(DataError, match="did you mean 'cifar100'"):
        load_data(SimpleNamespace(name="cifar-100"))
    with pytest.raises(DataError, match="unknown dataset 'xyzzy'"):
        load_data(SimpleNamespace(name="xyzzy"))


def test_register_and_load_custom():
    name = "_test_tiny_dataset"

    @register_dataset(name)
    def tiny(cfg):
        ds = ArrayDataset(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"]
        )
        return DataBundle(ds, ds, [1, 1], {"k": cfg.k})

    try:
        b = load_data(SimpleNamespace(name=name, k=7))
        assert b.info == {"k": 7} and b.val is None and b.resident
        with pytest.raises(ValueError, match="already"):
            register_dataset(name)(tiny)
    finally:
        DATASETS.unregister(name)
