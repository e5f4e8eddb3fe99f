"""CIFAR readers (official pickles, archives, JPEG copy), search, download, caches."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from ncollapse.config import DataConfig
from ncollapse.data import cifar, load_data
from ncollapse.data.cifar import read_cifar_folder
from ncollapse.data.files import safe_extract
from ncollapse.data.imagefolder import CIFAR10_CLASSES
from ncollapse.data.longtail import long_tail_counts
from ncollapse.errors import DataError

REPO = Path(__file__).resolve().parents[1]
JPEG = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(folder: Path, per_class: int = 6, test_per_class: int = 2) -> np.ndarray:
    """A tiny cifar-10-batches-py in the official format (bytes keys, (N, 3072) uint8)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), per_class)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        _dump(
            folder / f"data_batch_{i + 1}",
            {b"batch_label": b"x", b"labels": labels[part].tolist(), b"data": data[part]},
        )
    tl = np.tile(np.arange(10), test_per_class)
    _dump(
        folder / "test_batch",
        {b"labels": tl.tolist(), b"data": rng.integers(0, 256, (len(tl), 3072), dtype=np.uint8)},
    )
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    return data


def write_cifar100(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    y = np.tile(np.arange(100), 3)
    for fn in ("train", "test"):
        _dump(
            folder / fn,
            {
                b"fine_labels": y.tolist(),
                b"coarse_labels": (y // 5).tolist(),
                b"data": rng.integers(0, 256, (len(y), 3072), dtype=np.uint8),
            },
        )
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})


def make_tgz(src: Path, arcname: str, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data reachable: empty cwd, HOME, $NCOLLAPSE_DATA, and no JPEG fallback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    monkeypatch.setattr(cifar, "_jpeg_candidates", lambda: [tmp_path / "nowhere" / "x.tar.gz"])
    return tmp_path


def test_pickle_reader_official_format(tmp_path):
    data = write_cifar10(tmp_path / "cifar-10-batches-py")
    (xtr, ytr), (xte, yte), classes = read_cifar_folder(tmp_path / "cifar-10-batches-py", "cifar10")
    assert classes == CIFAR10_CLASSES
    assert xtr.shape == (60, 3, 32, 32) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    # row = 1024 R, 1024 G, 1024 B, row-major 32x32
    assert xtr[0, 1, 0, 0] == data[0, 1024] and xtr[3, 2, 1, 2] == data[3, 2048 + 32 + 2]
    assert xte.shape == (20, 3, 32, 32) and yte.tolist() == list(range(10)) * 2


def test_pickle_reader_refuses_foreign_objects(tmp_path):
    write_cifar10(tmp_path / "c")
    _dump(tmp_path / "c" / "test_batch", {b"data": functools.partial(print, "x"), b"labels": []})
    with pytest.raises(DataError, match="test_batch"):
        read_cifar_folder(tmp_path / "c", "cifar10")


def test_load_cifar10_lt_from_folder(isolated):
    write_cifar10(isolated / "d" / "cifar-10-batches-py", per_class=20)
    cfg = DataConfig(name="cifar10", root=str(isolated / "d"), imbalance=0.1)
    b = load_data(cfg)
    assert b.class_counts == long_tail_counts(20, 10, 0.1) == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert b.test.class_counts() == [2] * 10
    assert b.augment == "standard" and b.mean == cifar.CIFAR_MEAN and b.std == cifar.CIFAR_STD
    assert b.info["format"] == "folder" and b.info["source"].endswith("cifar-10-batches-py")
    assert b.info["capped"] == {}


def test_cap_recorded_and_warned(isolated):
    # class 3 short: only 4 of 20 images -> capped
    folder = isolated / "d" / "cifar-10-batches-py"
    write_cifar10(folder, per_class=20)
    d = pickle.load(open(folder / "data_batch_1", "rb"), encoding="bytes")
    d[b"labels"] = [0 if y == 3 else y for y in d[b"labels"]]
    _dump(folder / "data_batch_1", d)
    with pytest.warns(UserWarning, match="capped"):
        b = load_data(DataConfig(name="cifar10", root=str(isolated / "d"), imbalance=0.5))
    # n_max = 24 (class 0 gained 4); class 1 asks 22 of 20, class 3 asks int(24 * 0.5 ** (3 / 9)) = 19 of its 16
    assert b.info["n_max"] == 24
    assert b.info["capped"] == {
        "automobile": {"asked": 22, "available": 20},
        "cat": {"asked": 19, "available": 16},
    }
    assert b.class_counts[3] == b.info["capped"]["cat"]["available"]


def test_cifar100_from_archive_extracted_once(isolated, monkeypatch):
    write_cifar100(isolated / "src" / "cifar-100-python")
    root = isolated / "d"
    root.mkdir()
    make_tgz(
        isolated / "src" / "cifar-100-python", "cifar-100-python", root / "cifar-100-python.tar.gz"
    )
    monkeypatch.setitem(
        cifar.CIFAR_ARCHIVES, "cifar100", dict(cifar.CIFAR_ARCHIVES["cifar100"], md5="")
    )
    b = load_data(DataConfig(name="cifar100", root=str(root), imbalance=1.0))
    assert b.info["archive"] == str(root / "cifar-100-python.tar.gz")
    assert (root / "cifar-100-python" / "train").is_file()
    assert b.num_classes == 100 and b.class_counts == [3] * 100 and b.classes[7] == "c7"
    b2 = load_data(DataConfig(name="cifar100", root=str(root), imbalance=1.0))
    assert b2.info["format"] == "folder"  # found extracted next time


def test_archive_wrong_md5_rejected(isolated):
    write_cifar100(isolated / "src" / "cifar-100-python")
    (isolated / "d").mkdir()
    make_tgz(
        isolated / "src" / "cifar-100-python",
        "cifar-100-python",
        isolated / "d" / "cifar-100-python.tar.gz",
    )
    with pytest.raises(DataError, match="md5"):
        load_data(DataConfig(name="cifar100", root=str(isolated / "d")))


def test_missing_everywhere_names_dirs_and_file(isolated):
    (isolated / "mine").mkdir()  # an existing data.root; a missing one is the only place searched
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar100", root=str(isolated / "mine")))
    msg = str(e.value)
    assert "cifar-100-python.tar.gz" in msg and "--download" in msg
    assert str(isolated / "mine") in msg and str(isolated / "data") in msg
    assert str(isolated / "home" / ".cache" / "ncollapse") in msg
    with pytest.raises(DataError, match="nowhere"):
        load_data(DataConfig(name="cifar10"))


def test_safe_extract_rejects_traversal(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DataError, match="outside"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tf:
        info = tarfile.TarInfo("a")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="link"):
        safe_extract(link, tmp_path / "out2")


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield served, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_from_local_http_server(isolated, http_dir, monkeypatch):
    served, base = http_dir
    write_cifar10(isolated / "src" / "cifar-10-batches-py", per_class=10)
    arch = make_tgz(
        isolated / "src" / "cifar-10-batches-py", "cifar-10-batches-py", served / "c10.tar.gz"
    )
    md5 = hashlib.md5(arch.read_bytes()).hexdigest()
    spec = dict(cifar.CIFAR_ARCHIVES["cifar10"], url=f"{base}/c10.tar.gz", md5=md5)
    monkeypatch.setitem(cifar.CIFAR_ARCHIVES, "cifar10", spec)
    root = isolated / "dl"
    with pytest.raises(DataError, match="not found"):
        load_data(DataConfig(name="cifar10", root=str(root)))
    b = load_data(DataConfig(name="cifar10", root=str(root), download=True, imbalance=0.5))
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert b.info["archive"] == str(root / "cifar-10-python.tar.gz")
    assert sum(b.class_counts) == sum(int(10 * 0.5 ** (i / 9)) for i in range(10))
    # wrong checksum: nothing kept
    monkeypatch.setitem(cifar.CIFAR_ARCHIVES, "cifar10", dict(spec, md5="0" * 32))
    with pytest.raises(DataError, match="checksum"):
        cifar.download_cifar("cifar10", isolated / "dl2")
    assert not (isolated / "dl2").exists()  # not even the folder made for it
    # no server listening -> clear DataError
    monkeypatch.setitem(
        cifar.CIFAR_ARCHIVES, "cifar10", dict(spec, url="http://127.0.0.1:9/x.tar.gz")
    )
    with pytest.raises(DataError, match="no network"):
        cifar.download_cifar("cifar10", isolated / "dl3")
    assert not (isolated / "dl3").exists()
    # through load_data: the data.root it made for the download goes too
    with pytest.raises(DataError, match="no network"):
        load_data(DataConfig(name="cifar10", root=str(isolated / "new" / "dl4"), download=True))
    assert not (isolated / "new").exists()


@pytest.mark.cifar
@pytest.mark.slow
def test_real_jpeg_copy(tmp_path, monkeypatch):
    if not JPEG.is_file():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {JPEG} (../shared/datasets beside the repo)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NCOLLAPSE_DATA", raising=False)
    with pytest.warns(UserWarning, match="JPEG"):
        b = load_data(DataConfig(name="cifar10", imbalance=1.0, cache_dir=str(tmp_path / "cache")))
    assert b.info["format"] == "jpeg" and "below" in b.info["note"]
    assert len(b.train) == 50000 and len(b.test) == 10000
    assert b.classes == CIFAR10_CLASSES
    assert b.train.class_counts() == [5000] * 10 and b.test.class_counts() == [1000] * 10
    x = b.test.images.float() / 255
    mean = x.mean(dim=(0, 2, 3)).tolist()
    assert mean == pytest.approx([0.4942, 0.4851, 0.4504], abs=0.01)  # CIFAR-10 test means
    with pytest.warns(UserWarning, match="JPEG"):
        lt = load_data(
            DataConfig(name="cifar10", imbalance=0.01, cache_dir=str(tmp_path / "cache"))
        )
    assert lt.info["cache"]["cache_hit"] is True
    assert lt.class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
