"""SVHN (.mat), STL-10 (binary), MNIST / Fashion-MNIST (IDX): tiny files in the official formats."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ncollapse.config import DataConfig
from ncollapse.data import load_data, long_tail_counts
from ncollapse.data import official as off
from ncollapse.data.mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, read_idx
from ncollapse.data.svhn import read_stl10, read_svhn_mat
from ncollapse.errors import DataError

# tiny copies never match the published md5s; that warning is tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore:.*md5 of .* differs from the official")

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data reachable: empty cwd, HOME, $NCOLLAPSE_DATA, no system folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    for name, spec in list(off.OFFICIAL.items()):
        monkeypatch.setitem(off.OFFICIAL, name, dataclasses.replace(spec, system_dirs=()))
    return tmp_path


def _labelled_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is the label (to check images and labels stay paired)."""
    x = np.random.default_rng(seed).integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    x.reshape(len(labels), -1)[:, 0] = labels
    return x


# ------------------------------------------------------------------------------- SVHN


def write_svhn(folder: Path, per_class: list[int], test_per_class: int = 2) -> None:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for fname, counts, seed in (
        ("train_32x32.mat", per_class, 0),
        ("test_32x32.mat", [test_per_class] * 10, 1),
    ):
        digits = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), counts))
        x = _labelled_images(digits, (3, 32, 32), seed)  # (N, C, H, W), pixel [0,0,0] = digit
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # 10 means digit 0
        savemat(folder / fname, {"X": x.transpose(2, 3, 1, 0), "y": y})


@pytest.mark.filterwarnings("ignore:svhn. no validation images")
def test_svhn_reader_and_lt(isolated):
    # digit 0 has only 3 images: n_max = N // 10 = 10 caps it (no label shift)
    per_class = [3, 20, 15, 12, 10, 10, 10, 10, 10, 10]
    write_svhn(isolated / "d" / "svhn", per_class)
    x, y = read_svhn_mat(isolated / "d" / "svhn" / "train_32x32.mat")
    assert x.shape == (110, 3, 32, 32) and sorted(set(y.tolist())) == list(range(10))
    assert (x[:, 0, 0, 0] == y).all() and np.bincount(y).tolist() == per_class
    with pytest.warns(UserWarning, match="capped"):
        b = load_data(
            DataConfig(
                name="svhn", root=str(isolated / "d"), imbalance=0.5, val="unused", val_per_class=2
            )
        )
    assert b.info["n_max"] == 11
    want = long_tail_counts(11, 10, 0.5)
    assert b.class_counts == [min(w, n) for w, n in zip(want, per_class)]
    assert b.class_counts[0] == 3 and b.info["capped"]["0"] == {"asked": 11, "available": 3}
    for ds in (b.train, b.test, b.val):
        assert (ds.images[:, 0, 0, 0].long() == ds.labels).all()  # images and labels paired
    assert b.classes == [str(i) for i in range(10)] and b.test.class_counts() == [2] * 10
    assert b.info["checksums"]["train_32x32.mat"] == "differs"
    assert b.mean == (0.4377, 0.4438, 0.4728)
    assert not any("extra" in n for n in b.info["notes"])


@pytest.mark.filterwarnings("ignore:svhn. no validation images", "ignore:.*capped")
def test_svhn_extra_split_is_left_out_and_said_so(isolated):
    write_svhn(isolated / "d", [4] * 10)
    plain = load_data(DataConfig(name="svhn", root=str(isolated / "d"), imbalance=1.0))
    write_svhn(isolated / "x", [9] * 10)  # an "extra" file of other images beside them
    (isolated / "x" / "train_32x32.mat").rename(isolated / "d" / "extra_32x32.mat")
    b = load_data(DataConfig(name="svhn", root=str(isolated / "d"), imbalance=1.0))
    assert b.class_counts == plain.class_counts == [4] * 10
    assert (b.train.images == plain.train.images).all()
    assert any(n.startswith("extra_32x32.mat not used") for n in b.info["notes"])


def test_svhn_checksum_official_and_warning(isolated, monkeypatch):
    write_svhn(isolated / "d", [4] * 10)
    files = {
        f: hashlib.md5((isolated / "d" / f).read_bytes()).hexdigest()
        for f in ("train_32x32.mat", "test_32x32.mat")
    }
    spec = off.OFFICIAL["svhn"]
    with pytest.warns(UserWarning, match=r"md5 of train_32x32\.mat, test_32x32\.mat differs"):
        load_data(DataConfig(name="svhn", root=str(isolated / "d"), imbalance=1.0))
    monkeypatch.setitem(off.OFFICIAL, "svhn", dataclasses.replace(spec, md5=files))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = load_data(DataConfig(name="svhn", root=str(isolated / "d"), imbalance=1.0))
    assert set(b.info["checksums"].values()) == {"official"}


def test_svhn_bad_file_and_missing(isolated):
    (isolated / "d").mkdir()
    (isolated / "d" / "train_32x32.mat").write_bytes(b"nonsense")
    (isolated / "d" / "test_32x32.mat").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_data(DataConfig(name="svhn", root=str(isolated / "d")))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="svhn", root=str(isolated / "nowhere")))
    msg = str(e.value)
    assert "train_32x32.mat" in msg and str(isolated / "nowhere") in msg and "--download" in msg


# ------------------------------------------------------------------------------- STL-10


def write_stl10(folder: Path, train_per_class: int = 5, test_per_class: int = 2) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        lab = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), n))
        x = _labelled_images(lab, (3, 96, 96), seed)
        x[:, 0, 0, 1] = 200  # row 0, column 1: tells the column-major layout apart
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((lab + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return x


def test_stl10_reader_and_lt(isolated):
    last = write_stl10(isolated / "d" / "stl10_binary")
    x, y = read_stl10(isolated / "d" / "stl10_binary", "test")
    np.testing.assert_array_equal(x, last)
    assert x.shape == (20, 3, 96, 96) and (x[:, 0, 0, 0] == y).all()
    with pytest.warns(UserWarning, match="no validation images for class.es. c0"):
        b = load_data(
            DataConfig(
                name="stl10", root=str(isolated / "d"), imbalance=0.2, val="unused", val_per_class=2
            )
        )
    assert b.image_size == (96, 96) and b.classes[3] == "c3"
    assert b.class_counts == long_tail_counts(5, 10, 0.2) and b.info["n_max"] == 5
    assert b.info["val_counts"] == [min(2, 5 - n) for n in b.class_counts]
    small = load_data(DataConfig(name="stl10", root=str(isolated / "d"), imbalance=0.2, size=32))
    assert small.image_size == (32, 32) and small.test.images.shape == (20, 3, 32, 32)
    assert torch.equal(small.train.labels, b.train.labels)


def test_stl10_from_archive_extracts_only_needed(isolated, monkeypatch):
    src = isolated / "src" / "stl10_binary"
    write_stl10(src)
    (src / "unlabeled_X.bin").write_bytes(b"\0" * 27648)
    root = isolated / "d"
    root.mkdir()
    with tarfile.open(root / "stl10_binary.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="stl10_binary")
    spec = off.OFFICIAL["stl10"]
    with pytest.raises(DataError, match="md5"):
        load_data(DataConfig(name="stl10", root=str(root)))
    monkeypatch.setitem(off.OFFICIAL, "stl10", dataclasses.replace(spec, archive_md5=None))
    b = load_data(DataConfig(name="stl10", root=str(root), imbalance=1.0))
    assert b.class_counts == [5] * 10 and "extracted" in b.info["notes"][0]
    assert (root / "stl10_binary" / "train_X.bin").is_file()
    assert not (root / "stl10_binary" / "unlabeled_X.bin").exists()
    assert load_data(DataConfig(name="stl10", root=str(root), imbalance=1.0)).info["notes"] == []


# ------------------------------------------------------------------------------- IDX


def _idx_bytes(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype=">i4").tobytes()
    return head + a.astype(np.uint8).tobytes()


def write_idx_set(
    folder: Path, per_class: int = 8, test_per_class: int = 3, gz: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", per_class, 0), ("t10k", test_per_class, 1)):
        lab = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), n))
        x = _labelled_images(lab, (28, 28), seed)
        for kind, arr in (("images-idx3", x), ("labels-idx1", lab)):
            data = _idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_gz_or_plain(isolated, gz):
    write_idx_set(isolated / "d" / "MNIST" / "raw", gz=gz)
    b = load_data(DataConfig(name="mnist", root=str(isolated / "d"), imbalance=0.5))
    assert b.in_channels == 1 and b.image_size == (28, 28) and b.augment == "none"
    assert b.class_counts == long_tail_counts(8, 10, 0.5) and b.test.class_counts() == [3] * 10
    assert (b.train.images[:, 0, 0, 0].long() == b.train.labels).all()
    assert b.mean == (0.1307,) and b.std == (0.3081,)
    if not gz:
        assert set(b.info["checksums"].values()) == {"no published checksum"}


def test_fashion_mnist_and_idx_errors(isolated):
    write_idx_set(isolated / "d" / "fashion-mnist")
    b = load_data(DataConfig(name="fashion_mnist", root=str(isolated / "d"), imbalance=1.0))
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"
    assert b.augment == "standard" and b.class_counts == [8] * 10
    bad = isolated / "bad"
    bad.write_bytes(b"\1\2\3\4")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    bad.write_bytes(_idx_bytes(np.zeros((2, 3, 3)))[:-1])
    with pytest.raises(DataError, match="declares shape"):
        read_idx(bad)
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        load_data(DataConfig(name="fashion_mnist", root=str(isolated / "none")))


def test_mnist_download_from_local_server(isolated, monkeypatch):
    served = isolated / "served"
    write_idx_set(served)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        spec = dataclasses.replace(off.OFFICIAL["mnist"], url=url, md5=md5)
        monkeypatch.setitem(off.OFFICIAL, "mnist", spec)
        root = isolated / "dl"
        b = load_data(DataConfig(name="mnist", root=str(root), download=True, imbalance=1.0))
        assert (root / "mnist" / "train-images-idx3-ubyte.gz").is_file()
        assert b.info["notes"] == ["downloaded"] and b.class_counts == [8] * 10
        assert set(b.info["checksums"].values()) == {"official"}
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.skipif(
    not (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the packaged copy differs by md5 but is not warned about
        b = load_data(DataConfig(name="fashion_mnist", imbalance=0.01))
    assert b.info["source"] == str(FASHION_SYSTEM)
    assert b.class_counts == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert b.test.class_counts() == [1000] * 10 and b.image_size == (28, 28)
    x = read_idx(FASHION_SYSTEM / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    assert x.shape == (60000, 28, 28)
    assert x.mean() == pytest.approx(FASHION_MNIST_MEAN[0], abs=5e-5)
    assert x.std() == pytest.approx(FASHION_MNIST_STD[0], abs=5e-5)
