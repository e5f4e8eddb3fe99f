# ruff: noqa: NPY002  (the legacy global generator is the point: bit-exact with the official code)
"""Long-tail counts and subset choice (the LDAM protocol of Cao et al., 2019)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ncollapse.data import long_tail_counts, long_tail_indices, long_tail_subset
from ncollapse.errors import DataError, UserError

CIFAR10_LT_001 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_counts_r001():
    counts = long_tail_counts(5000, 10, 0.01)
    assert counts == CIFAR10_LT_001
    assert sum(counts) == 12406


def test_cifar100_counts_r001():
    counts = long_tail_counts(500, 100, 0.01)
    assert len(counts) == 100 and counts[0] == 500 and counts[-1] == 5
    assert sum(counts) == 10847


def test_step_profile_and_balanced():
    assert long_tail_counts(100, 10, 0.1, "step") == [100] * 5 + [10] * 5
    assert long_tail_counts(100, 5, 0.1, "step") == [100] * 2 + [10] * 3
    assert long_tail_counts(100, 4, 1.0) == [100] * 4
    assert long_tail_counts(7, 1, 0.01) == [7]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), "x"])
def test_imbalance_out_of_range(bad):
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        long_tail_counts(100, 10, bad)


def test_unknown_profile():
    with pytest.raises(UserError, match="exp, step"):
        long_tail_counts(100, 10, 0.1, "linear")


def _reference(labels, counts, seed):
    """The official LDAM IMBALANCECIFAR10.gen_imbalanced_data, verbatim in spirit."""
    np.random.seed(seed)
    new = []
    classes = np.unique(labels)
    for the_class, the_img_num in zip(classes, counts):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        new.append(idx[:the_img_num])
    return np.concatenate(new)


def test_indices_bit_exact_with_reference_and_pinned():
    labels = np.repeat(np.arange(10), 5000)
    idx = long_tail_indices(labels, CIFAR10_LT_001, seed=0)
    state = np.random.get_state()
    ref = _reference(labels, CIFAR10_LT_001, 0)
    np.random.set_state(state)
    np.testing.assert_array_equal(idx, ref)
    assert idx.dtype == np.int64 and len(idx) == 12406
    assert idx[:5].tolist() == [398, 3833, 4836, 4572, 636]
    assert idx[5000:5005].tolist() == [5597, 5332, 5521, 8935, 9800]
    digest = hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
    assert digest == "f5a6ab138b23b845089475f48a506b9479d512102972d52a891a06c42a25baa3"
    np.testing.assert_array_equal(np.bincount(labels[idx]), CIFAR10_LT_001)


def test_indices_stable_and_seed_dependent():
    labels = np.repeat(np.arange(10), 500)
    counts = long_tail_counts(500, 10, 0.1)
    a = long_tail_indices(labels, counts, seed=0)
    b = long_tail_indices(labels, counts, seed=0)
    c = long_tail_indices(labels, counts, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert long_tail_indices(labels, counts, seed=1)[:5].tolist() != a[:5].tolist()


def test_global_rng_restored():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    long_tail_indices(np.repeat(np.arange(3), 10), [10, 5, 2], seed=7)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_cap_never_asks_for_more():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    idx, capped = long_tail_indices(labels, [8, 5, 4], seed=0, return_capped=True)
    assert capped == {1: (5, 3)}
    assert np.bincount(labels[idx]).tolist() == [8, 3, 4]
    # labels stay aligned: every chosen index has the class it was chosen for
    assert labels[idx].tolist() == [0] * 8 + [1] * 3 + [2] * 4
    idx2, capped2 = long_tail_subset(labels, [8, 5, 4, 2], seed=0)  # class 3 does not exist
    assert capped2 == {1: (5, 3), 3: (2, 0)}
    np.testing.assert_array_equal(idx, idx2)
