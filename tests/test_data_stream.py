"""List-file datasets streamed through DataLoader workers, and their per-sample transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ncollapse.config import DataConfig
from ncollapse.data import StreamingDataset, load_data, make_loader
from ncollapse.data.stream import read_list
from ncollapse.data.transforms import color_jitter, eval_resize_crop, rrc_box, to_normalized
from ncollapse.errors import DataError

Image = pytest.importorskip("PIL.Image")

SIZES = [(50, 40), (64, 64), (30, 70), (45, 45)]


def make_list_dataset(root: Path, n_train=(6, 4, 2), n_test=2) -> dict:
    """JPEG files of mixed sizes under root/images/<class>/, and train/test/val list files."""
    rng = np.random.default_rng(0)
    lists = {"train": [], "test": [], "val": []}
    for split, counts in (("train", n_train), ("test", [n_test] * 3), ("val", [1] * 3)):
        for c, n in enumerate(counts):
            d = root / "images" / f"n{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = SIZES[(i + c) % len(SIZES)]
                a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                rel = f"images/n{c:03d}/{split}_{i} x.jpg"  # a space in the name
                Image.fromarray(a).save(root / rel, quality=90)
                lists[split].append(f"{rel} {c}")
    paths = {}
    for split, lines in lists.items():
        paths[split] = root / f"{split}.txt"
        paths[split].write_text("# comment\n" + "\n".join(lines) + "\n\n")
    return paths


@pytest.fixture
def listdata(tmp_path):
    paths = make_list_dataset(tmp_path)
    cfg = DataConfig(
        name="listfile",
        root=str(tmp_path),
        train_list=str(paths["train"]),
        test_list="test.txt",  # relative to data.root
        val_list=str(paths["val"]),
        size=32,
    )
    return load_data(cfg), tmp_path


def test_bundle_interface(listdata):
    b, _root = listdata
    assert not b.resident and not b.train.resident and b.augment == "stream"
    assert b.class_counts == [6, 4, 2] and b.test.class_counts() == [2, 2, 2]
    assert b.val is not None and b.val.class_counts() == [1, 1, 1]
    assert b.in_channels == 3 and b.image_size == (32, 32) and b.num_classes == 3
    assert b.train.labels.dtype == torch.int64 and b.train.classes == ["0", "1", "2"]
    x, y = b.test[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == 0
    assert b.info["val_counts"] == [1, 1, 1]


def test_eval_transform_matches_resize_and_centre_crop(listdata):
    b, root = listdata
    x, _ = b.test[0]
    im = Image.open(root / b.test.files[0]).convert("RGB")  # 50 x 40
    want = im.resize((45, 36), Image.BILINEAR).crop((6, 2, 38, 34))  # int(32 / .875) = 36
    np.testing.assert_allclose(x.numpy(), to_normalized(want, b.mean, b.std).numpy())
    assert eval_resize_crop(im, 32).size == (32, 32)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_full_pass_through_two_workers_and_worker_independence(listdata):
    b, _root = listdata
    order = torch.randperm(len(b.train), generator=torch.Generator().manual_seed(0))
    two = _batches(make_loader(b.train, order, 5, workers=2, train=True, seed=3, epoch=1))
    zero = _batches(make_loader(b.train, order, 5, workers=0, train=True, seed=3, epoch=1))
    assert [len(y) for _x, y in two] == [5, 5, 2]
    assert torch.equal(torch.cat([y for _x, y in two]), b.train.labels[order])
    for (x2, y2), (x0, y0) in zip(two, zero):
        assert x2.shape[1:] == (3, 32, 32) and x2.dtype == torch.float32
        assert torch.equal(x2, x0) and torch.equal(y2, y0)
    other = _batches(make_loader(b.train, order, 5, workers=0, train=True, seed=3, epoch=2))
    assert not torch.equal(other[0][0], zero[0][0])  # a new epoch draws new crops
    ev = _batches(make_loader(b.train, None, 4, workers=0, train=False, seed=0, epoch=0))
    ev2 = _batches(make_loader(b.train, None, 4, workers=0, train=False, seed=9, epoch=5))
    assert all(torch.equal(a[0], c[0]) for a, c in zip(ev, ev2))  # evaluation is deterministic
    dl = make_loader(
        b.train, list(range(12)), 5, workers=0, train=False, seed=0, epoch=0, drop_last=True
    )
    assert len(list(dl)) == 2


def test_rrc_box_semantics():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = rrc_box(100, 60, rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 100
        assert 0.08 * 6000 * 0.9 <= h * w <= 6000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # no attempt can fit: the centre crop clamped to the ratio range
    assert rrc_box(100, 10, rng, scale=(2.0, 3.0)) == (0, 43, 10, 13)
    assert rrc_box(10, 100, rng, scale=(2.0, 3.0)) == (43, 0, 13, 10)
    assert rrc_box(40, 40, rng, scale=(2.0, 3.0)) == (0, 0, 40, 40)


def test_color_jitter_zero_is_identity_and_stays_in_range():
    from PIL import ImageEnhance

    a = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    assert np.array_equal(np.asarray(color_jitter(im, np.random.default_rng(0), 0, 0, 0)), a)
    rng = np.random.default_rng(5)
    out = color_jitter(im, rng, brightness=0.4, contrast=0, saturation=0)
    f = np.random.default_rng(5).uniform(0.6, 1.4)
    assert np.array_equal(np.asarray(out), np.asarray(ImageEnhance.Brightness(im).enhance(f)))


def test_list_errors(tmp_path):
    paths = make_list_dataset(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("images/a.jpg 0\nno_label_here\n")
    with pytest.raises(DataError, match=r"bad\.txt:2"):
        read_list(bad)
    base = dict(name="listfile", root=str(tmp_path), train_list=str(paths["train"]))
    with pytest.raises(DataError, match="test_list"):
        load_data(DataConfig(**base))
    with pytest.raises(DataError, match="val_list"):
        load_data(DataConfig(**base, test_list=str(paths["test"]), val="unused"))
    missing = tmp_path / "missing.txt"
    missing.write_text("images/nope.jpg 1\n")
    with pytest.raises(DataError, match=r"nope\.jpg"):
        load_data(DataConfig(**base, test_list=str(missing)))
    ds = StreamingDataset(tmp_path, ["images/n000/none.jpg"], [0], ["0"], size=8)
    with pytest.raises(DataError, match="none.jpg"):
        ds[0]


def test_to_normalized_equals_batch_normalize():
    from ncollapse.data import BatchAugment

    a = np.random.default_rng(2).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = BatchAugment(mean, std).normalize(torch.from_numpy(a).permute(2, 0, 1)[None])[0]
    assert torch.equal(to_normalized(Image.fromarray(a), mean, std), ref)


def test_workers_start_without_rerunning_an_unguarded_script(tmp_path):
    """Workers come from a fork server (never forked from a threaded process); a user's script
    without an ``if __name__ == "__main__"`` guard is not run again by it."""
    import subprocess
    import sys

    paths = make_list_dataset(tmp_path)
    script = tmp_path / "user_script.py"
    script.write_text(
        "from ncollapse.config.schema import DataConfig\n"
        "from ncollapse.data import load_data, make_loader\n"
        "print('script body ran', flush=True)\n"
        f"cfg = DataConfig(name='listfile', root={str(tmp_path)!r}, "
        f"train_list={str(paths['train'])!r}, test_list='test.txt', size=16)\n"
        "b = load_data(cfg)\n"
        "n = sum(len(y) for _, y in make_loader(b.train, None, 4, workers=2, train=True,"
        " seed=0, epoch=0))\n"
        "print('samples', n, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("script body ran") == 1 and "samples 12" in out.stdout
