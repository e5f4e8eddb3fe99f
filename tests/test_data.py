"""Digits loader, DataBundle / ArrayDataset and load_data dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncollapse.config import DataConfig
from ncollapse.data import ArrayDataset, DataBundle, load_data, load_digits_lt
from ncollapse.data.longtail import long_tail_counts
from ncollapse.errors import DataError


def test_digits_lt_bundle():
    b = load_digits_lt(imbalance=0.05)
    assert isinstance(b, DataBundle)
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape[1:] == (1, 8, 8)
    assert b.train.labels.dtype == torch.int64
    assert b.augment == "none" and b.classes == [str(i) for i in range(10)]
    assert b.class_counts == long_tail_counts(b.info["n_max"], 10, 0.05)
    assert b.class_counts == b.train.class_counts()
    tc = b.test.class_counts()
    assert len(set(tc)) == 1 and tc[0] > 40  # balanced test
    assert int(b.train.images.max()) == 255 and int(b.train.images.min()) == 0
    x = b.train.images.float() / 255
    assert b.mean[0] == pytest.approx(x.mean().item(), rel=1e-5)
    assert b.std[0] == pytest.approx(x.std(unbiased=False).item(), rel=1e-5)
    assert b.info["capped"] == {}


def test_digits_train_test_disjoint_and_deterministic():
    from sklearn.datasets import load_digits

    a = load_digits_lt(subset_seed=0)
    a2 = load_digits_lt(subset_seed=0)
    c = load_digits_lt(subset_seed=1)
    assert torch.equal(a.train.images, a2.train.images)
    assert not torch.equal(a.train.images, c.train.images)
    imgs = np.clip(np.rint(load_digits().images * 255 / 16), 0, 255).astype(np.uint8)
    assert len({im.tobytes() for im in imgs}) > 1700
    tr = {im.numpy().tobytes() for im in a.train.images}
    te = {im.numpy().tobytes() for im in a.test.images}
    # only exact duplicates in the raw data could be on both sides
    assert len(tr & te) <= 1797 - len({im.tobytes() for im in imgs})


def test_load_data_digits_and_errors():
    b = load_data(DataConfig(name="digits", imbalance=0.1, profile="step"))
    assert b.class_counts[:5] == [b.info["n_max"]] * 5
    assert b.class_counts[5:] == [int(b.info["n_max"] * 0.1)] * 5
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        load_data(DataConfig(name="digits", imbalance=2.0))
    with pytest.raises(DataError, match="digits"):
        load_data(DataConfig(name="digitz"))


def test_array_dataset_checks():
    ds = ArrayDataset(
        torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"]
    )
    assert len(ds) == 3 and ds.class_counts() == [1, 2]
    img, y = ds[1]
    assert img.shape == (1, 2, 2) and y == 1
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1]), ["a", "b"])
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(
            torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]), ["a", "b"]
        )
