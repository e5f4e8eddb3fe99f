# ruff: noqa: NPY002  (checks that the legacy global generator is left untouched)
"""The validation split drawn from the training images the long-tail subset leaves unused."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ncollapse.config import DataConfig
from ncollapse.data import load_data, load_digits_lt, long_tail_counts, unused_validation_indices
from ncollapse.data.imagefolder import CIFAR10_CLASSES
from ncollapse.data.longtail import long_tail_subset
from ncollapse.data.split import check_val_options
from ncollapse.errors import DataError


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_unique_cifar10(folder: Path, per_class: int = 50, test_per_class: int = 5) -> None:
    """An official-format cifar-10-batches-py whose every image (train and test) is distinct:
    the first two bytes of each row encode a running number."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def rows(n: int, start: int) -> np.ndarray:
        d = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        num = np.arange(start, start + n)
        d[:, 0], d[:, 1] = num // 256, num % 256
        return d

    labels = rng.permutation(np.tile(np.arange(10), per_class))
    data = rows(len(labels), 0)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        _dump(
            folder / f"data_batch_{i + 1}",
            {b"labels": labels[part].tolist(), b"data": data[part]},
        )
    tl = np.tile(np.arange(10), test_per_class)
    _dump(folder / "test_batch", {b"labels": tl.tolist(), b"data": rows(len(tl), len(labels))})
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    write_unique_cifar10(tmp_path / "d" / "cifar-10-batches-py")
    return tmp_path / "d"


def _rows(images: torch.Tensor) -> set[bytes]:
    return {im.numpy().tobytes() for im in images}


def test_indices_disjoint_balanced_seeded():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    counts = long_tail_counts(int(np.bincount(labels).min()), 4, 0.1)
    state = np.random.get_state()
    used = long_tail_subset(labels, counts, 0)[0]
    val, vc = unused_validation_indices(labels, used, 30, seed=3, num_classes=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    assert not set(val.tolist()) & set(used.tolist())
    avail = np.bincount(labels, minlength=4) - np.bincount(labels[used], minlength=4)
    assert vc == [min(30, int(a)) for a in avail] == np.bincount(labels[val], minlength=4).tolist()
    again, _ = unused_validation_indices(labels, used, 30, seed=3, num_classes=4)
    other, _ = unused_validation_indices(labels, used, 30, seed=4, num_classes=4)
    np.testing.assert_array_equal(val, again)
    assert not np.array_equal(val, other)
    # a smaller request is a subset of a larger one (per-class streams)
    small, _ = unused_validation_indices(labels, used, 10, seed=3, num_classes=4)
    assert set(small.tolist()) <= set(val.tolist())


@pytest.mark.filterwarnings("ignore:cifar10. no validation images")
def test_cifar_val_from_unused_images(cifar_root):
    base = dict(name="cifar10", root=str(cifar_root), imbalance=0.1)
    none = load_data(DataConfig(**base))
    assert none.val is None and none.info["val_counts"] is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = load_data(DataConfig(**base, val="unused", val_per_class=20, val_seed=1))
    msgs = [str(x.message) for x in w if "validation" in str(x.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "airplane" in msgs[0]
    assert "automobile" not in msgs[0]
    # the training subset is bit-exact with data.val=none
    assert torch.equal(b.train.images, none.train.images)
    assert torch.equal(b.train.labels, none.train.labels)
    assert b.class_counts == none.class_counts == long_tail_counts(50, 10, 0.1)
    # class 0 keeps all 50 of its images: none left; class 1 keeps 38 -> 12; the rest give 20
    expect = [min(20, 50 - n) for n in b.class_counts]
    assert expect[0] == 0 and expect[1] == 12 and expect[2:] == [20] * 8
    assert b.info["val_counts"] == expect == b.val.class_counts()
    assert b.info["val_missing"] == ["airplane"]
    assert b.info["val"] == {"mode": "unused", "per_class": 20, "seed": 1}
    # no image is shared with the training subset or the test set
    vr = _rows(b.val.images)
    assert len(vr) == len(b.val) == sum(expect)
    assert not vr & _rows(b.train.images) and not vr & _rows(b.test.images)
    # fixed by its seed, changed by another
    same = load_data(DataConfig(**base, val="unused", val_per_class=20, val_seed=1))
    other = load_data(DataConfig(**base, val="unused", val_per_class=20, val_seed=2))
    assert torch.equal(same.val.images, b.val.images)
    assert _rows(other.val.images) != vr
    assert torch.equal(other.train.images, b.train.images)


def test_val_per_class_beyond_what_exists(cifar_root):
    with pytest.warns(UserWarning, match="airplane"):
        b = load_data(
            DataConfig(
                name="cifar10", root=str(cifar_root), imbalance=0.1, val="unused", val_per_class=999
            )
        )
    assert b.info["val_counts"] == [50 - n for n in b.class_counts]


def test_digits_val_disjoint_from_train_and_test():
    none = load_digits_lt(imbalance=0.1)
    b = load_digits_lt(imbalance=0.1, val="unused", val_per_class=15, val_seed=0)
    assert torch.equal(b.train.images, none.train.images)
    assert torch.equal(b.test.images, none.test.images)
    vc = b.info["val_counts"]
    assert vc == b.val.class_counts() and all(0 <= n <= 15 for n in vc)
    assert vc[-1] == 15  # the tail class has plenty of unused pool images
    # the raw digits hold a few exact duplicates; beyond those no row is shared
    from sklearn.datasets import load_digits

    raw = np.clip(np.rint(load_digits().images * 255 / 16), 0, 255).astype(np.uint8)
    dups = len(raw) - len({im.tobytes() for im in raw})
    vr = _rows(b.val.images)
    assert len(vr & _rows(b.train.images)) + len(vr & _rows(b.test.images)) <= dups
    via = load_data(
        DataConfig(name="digits", imbalance=0.1, val="unused", val_per_class=15, val_seed=0)
    )
    assert torch.equal(via.val.images, b.val.images)


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"val": "unused", "val_per_class": 0}, "val_per_class"),
        ({"val": "unused", "val_per_class": -3}, "val_per_class"),
        ({"val": "unsued"}, "did you mean 'unused'"),
        ({"val": "test"}, "data.val"),
        ({"val": "unused", "val_seed": -1}, "val_seed"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(DataError, match=match):
        check_val_options(SimpleNamespace(**{"val_per_class": 10, "val_seed": 0, **opts}))
    with pytest.raises(DataError, match=match):
        load_data(DataConfig(name="digits", **opts))


def test_old_style_config_without_val_fields():
    b = load_data(
        SimpleNamespace(
            name="digits", imbalance=0.1, profile="exp", subset_seed=0, test_fraction=0.3
        )
    )
    assert b.val is None


JPEG = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.mark.cifar
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:using the CIFAR-10 JPEG copy")
def test_real_cifar10_lt_validation(tmp_path, monkeypatch):
    if not JPEG.is_file():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {JPEG}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    cfg = dict(name="cifar10", imbalance=0.01, cache_dir=str(tmp_path / "cache"))
    none = load_data(DataConfig(**cfg))
    with pytest.warns(UserWarning, match="no validation images for class.es. airplane:"):
        b = load_data(DataConfig(**cfg, val="unused", val_per_class=1000))
    assert b.class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert torch.equal(b.train.images, none.train.images)
    assert b.info["val_counts"] == [0] + [1000] * 9 == b.val.class_counts()
