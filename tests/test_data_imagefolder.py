"""Image-folder reader: tiny PNG trees, archives, class order, corrupt files, cache."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ncollapse.config import DataConfig
from ncollapse.data import load_data
from ncollapse.data.imagefolder import decode_images, read_imagefolder
from ncollapse.errors import DataError

Image = pytest.importorskip("PIL.Image")

CLASSES = ["zebra", "apple", "mango"]  # explicit order, not alphabetical


def make_tree(root: Path, per_class=(4, 3, 2), test_per_class=2, size=(6, 5)) -> dict:
    rng = np.random.default_rng(0)
    truth = {}
    for split, counts in (("train", per_class), ("test", [test_per_class] * 3)):
        for c, n in zip(CLASSES, counts):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{i:04d}.png")
                truth[(split, c, i)] = a
    return truth


def test_read_tree_with_class_order(tmp_path):
    truth = make_tree(tmp_path / "t")
    arrays, classes, meta = read_imagefolder(tmp_path / "t", CLASSES, cache_dir=tmp_path / "c")
    assert classes == CLASSES and meta["cache_hit"] is False
    x, y = arrays["train"]
    assert x.shape == (9, 3, 5, 6) and x.dtype == np.uint8
    assert y.tolist() == [0] * 4 + [1] * 3 + [2] * 2
    np.testing.assert_array_equal(x[4].transpose(1, 2, 0), truth[("train", "apple", 0)])
    again, _c, meta2 = read_imagefolder(tmp_path / "t", CLASSES, cache_dir=tmp_path / "c")
    assert meta2["cache_hit"] is True
    np.testing.assert_array_equal(again["train"][0], x)
    # default order: sorted folder names
    _a, classes2, _m = read_imagefolder(tmp_path / "t", cache_dir=tmp_path / "c")
    assert classes2 == sorted(CLASSES)


def test_cache_invalidated_when_source_changes(tmp_path):
    make_tree(tmp_path / "t")
    read_imagefolder(tmp_path / "t", CLASSES, cache_dir=tmp_path / "c")
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(
        tmp_path / "t" / "train" / "mango" / "0009.png"
    )
    arrays, _c, meta = read_imagefolder(tmp_path / "t", CLASSES, cache_dir=tmp_path / "c")
    assert meta["cache_hit"] is False and len(arrays["train"][1]) == 10


def test_read_from_tar_gz_and_load_data(tmp_path):
    make_tree(tmp_path / "t")
    arch = tmp_path / "tree.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(tmp_path / "t", arcname="tree")
    direct, _c, _m = read_imagefolder(tmp_path / "t", CLASSES, use_cache=False)
    packed, classes, _m = read_imagefolder(arch, CLASSES, cache_dir=tmp_path / "c")
    assert classes == CLASSES
    np.testing.assert_array_equal(direct["train"][0], packed["train"][0])
    cfg = DataConfig(
        name="imagefolder",
        root=str(arch),
        class_order=CLASSES,
        imbalance=0.5,
        cache_dir=str(tmp_path / "c"),
    )
    b = load_data(cfg)
    assert b.class_counts == [4, 2, 2] and b.classes == CLASSES
    assert len(b.mean) == 3 and b.test.class_counts() == [2, 2, 2]


def test_corrupt_file_named(tmp_path):
    make_tree(tmp_path / "t")
    bad = tmp_path / "t" / "train" / "apple" / "0001.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"apple/0001\.png"):
        read_imagefolder(tmp_path / "t", CLASSES, cache_dir=tmp_path / "c")


def test_class_mismatch_and_missing(tmp_path):
    make_tree(tmp_path / "t")
    with pytest.raises(DataError, match="missing: kiwi"):
        read_imagefolder(tmp_path / "t", [*CLASSES, "kiwi"], use_cache=False)
    with pytest.raises(DataError, match="not found"):
        read_imagefolder(tmp_path / "nope", CLASSES)
    with pytest.raises(DataError, match=r"data\.root"):
        load_data(DataConfig(name="imagefolder"))


def test_decode_parallel_matches_serial(tmp_path):
    make_tree(tmp_path / "t", per_class=(5, 5, 5))
    items = [(str(p), p.read_bytes()) for p in sorted((tmp_path / "t").rglob("*.png"))]
    np.testing.assert_array_equal(decode_images(items, workers=1), decode_images(items, workers=2))


def test_size_mismatch(tmp_path):
    make_tree(tmp_path / "t")
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(
        tmp_path / "t" / "test" / "apple" / "0005.png"
    )
    with pytest.raises(DataError, match=r"0005\.png"):
        read_imagefolder(tmp_path / "t", CLASSES, use_cache=False)


def test_size_resizes_at_decode_and_keys_the_cache(tmp_path):
    make_tree(tmp_path / "t", per_class=(2, 2, 2), size=(64, 64))
    cfg = dict(
        name="imagefolder",
        root=str(tmp_path / "t"),
        class_order=CLASSES,
        imbalance=1.0,
        cache_dir=str(tmp_path / "c"),
    )
    b = load_data(DataConfig(**cfg, size=32))
    assert b.image_size == (32, 32) and b.train.images.shape[1:] == (3, 32, 32)
    assert b.test.images.shape[1:] == (3, 32, 32) and b.info["size"] == 32
    assert b.info["cache"]["cache_hit"] is False
    # the square source is a plain bilinear resize
    src = np.asarray(Image.open(tmp_path / "t" / "test" / "zebra" / "0000.png"))
    want = np.asarray(Image.fromarray(src).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(b.test.images[0].numpy().transpose(1, 2, 0), want)
    again = load_data(DataConfig(**cfg, size=32))
    assert again.info["cache"]["cache_hit"] is True
    other = load_data(DataConfig(**cfg, size=16))
    assert other.info["cache"]["cache_hit"] is False and other.image_size == (16, 16)
    full = load_data(DataConfig(**cfg))
    assert full.image_size == (64, 64) and full.info["cache"]["cache_hit"] is False


def test_size_mixed_and_non_square_sources(tmp_path):
    from ncollapse.data.resize import fit_image, resize_array

    make_tree(tmp_path / "t", size=(40, 30))  # w 40, h 30
    Image.fromarray(np.full((50, 20, 3), 7, np.uint8)).save(
        tmp_path / "t" / "test" / "apple" / "0005.png"
    )
    arrays, _c, _m = read_imagefolder(tmp_path / "t", CLASSES, use_cache=False, size=12)
    assert arrays["train"][0].shape[1:] == (3, 12, 12)
    assert arrays["test"][0].shape == (7, 3, 12, 12)
    # shorter side to 12 (40x30 -> 16x12), centre crop: columns 2..13
    im = Image.open(tmp_path / "t" / "train" / "zebra" / "0000.png")
    scaled = np.asarray(im.resize((16, 12), Image.BILINEAR))
    np.testing.assert_array_equal(arrays["train"][0][0].transpose(1, 2, 0), scaled[:, 2:14])
    np.testing.assert_array_equal(np.asarray(fit_image(im, 12)), scaled[:, 2:14])
    # arrays (grey and colour) follow the same rule; the right size is left alone
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 30, 40), dtype=np.uint8)
    assert resize_array(x, 12).shape == (2, 1, 12, 12)
    assert resize_array(x, None) is x
    with pytest.raises(DataError, match="data.size"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path / "t"), size=0))


def test_a_folder_of_64px_images_trains_at_32px(tmp_path):
    """The issue's case: a tree of 64x64 pictures trains on a CIFAR ResNet at 32x32 with
    data.size=32 (one short epoch, from the command line's composition)."""
    import ncollapse

    make_tree(tmp_path / "t", per_class=(6, 6, 6), size=(64, 64))
    sets = {
        "data.name": "imagefolder",
        "data.root": str(tmp_path / "t"),
        "data.class_order": "[zebra,apple,mango]",
        "data.imbalance": 0.5,
        "data.size": 32,
        "data.cache_dir": str(tmp_path / "c"),
        "model.backbone": "resnet32",
        "optim.batch_size": 5,  # 13 images: batches of 5, 5, 3
        "optim.milestones": "[]",
        "optim.warmup_epochs": 0,
        "eval.collapse_every": 1,
        "run.progress": "none",
        "run.tensorboard": "false",
    }
    result = ncollapse.train(
        overrides=[f"{k}={v}" for k, v in sets.items()], epochs=1, out=str(tmp_path / "runs")
    )
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["info"]["size"] == 32 and data["class_counts"] == [6, 4, 3]
    assert result.summary["epochs"] == 1 and 0.0 <= result.summary["final"]["acc"] <= 1.0
