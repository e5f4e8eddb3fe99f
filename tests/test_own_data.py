"""A user's own image folder, as given: every image trains unless a long-tailed subset is asked
for, the run says what it trains on, symbolic links are followed (loops refused), mixed sizes
name data.size, and the decode cache never lands in the data folder."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncollapse.composition import compose
from ncollapse.data import load_data, long_tail_counts
from ncollapse.errors import ConfigError, DataError

SRC = Path(__file__).resolve().parents[1] / "src"
#: five classes in name order, not in order of size: 260 training images
COUNTS = {"ant": 20, "bee": 120, "cat": 40, "dog": 55, "eel": 25}


def make_folder(root: Path, counts=COUNTS, test=6, size=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, (name, n) in enumerate(counts.items()):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n if split == "train" else test):
                a = (rng.integers(0, 60, (*size, 3)) + 40 * k).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "mine")


def _cfg(root, *extra, recipe=None):
    return compose(recipe, overrides=["data.name=imagefolder", f"data.root={root}", *extra])


def test_an_image_folder_trains_on_every_image_by_default(folder):
    cfg = _cfg(folder)
    assert cfg.data.imbalance is None  # the digits' r = 0.05 is the digits', not yours
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "capped" warning either
        b = load_data(cfg.data)
    assert len(b.train) == 260 and b.class_counts == list(COUNTS.values())
    assert b.info["subset"].startswith("none")
    line = b.describe()
    assert line.startswith("training on 260 images of 5 classes (first class 'ant': 20, ")
    assert "last class 'eel': 25" in line and f"every training image of {folder}" in line


def test_the_subset_only_when_asked(folder, tmp_path):
    with pytest.warns(UserWarning, match=r"capped at the images that exist \(ant: 120 asked"):
        asked = load_data(_cfg(folder, "data.imbalance=0.1").data)
    # the profile in label order (sorted folder names) from the largest class, capped
    want = [min(n, c) for n, c in zip(long_tail_counts(120, 5, 0.1), COUNTS.values())]
    assert asked.class_counts == want and asked.info["imbalance"] == 0.1
    assert "a long-tailed subset of" in asked.describe()
    # a recipe that sets it asks for it too
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("data:\n  name: imagefolder\n  imbalance: 0.1\n")
    assert compose(recipe, overrides=[f"data.root={folder}"]).data.imbalance == 0.1
    # r = 1 keeps every image and says nothing about capping
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_data(_cfg(folder, "data.imbalance=1").data).train) == 260
    # the benchmarks keep their protocol when nothing is set
    assert compose(overrides=["data.name=cifar10"]).data.imbalance == 0.01
    assert compose().data.imbalance == 0.05  # the embedded digits


def test_validation_from_unused_images_needs_a_subset(folder):
    with pytest.raises(ConfigError, match=r"data.val=unused .* set data.imbalance"):
        _cfg(folder, "data.val=unused")
    assert _cfg(folder, "data.val=unused", "data.imbalance=0.1").data.val == "unused"


def test_symlinked_class_folders_and_files_are_followed(tmp_path):
    real = make_folder(tmp_path / "real")
    linked = tmp_path / "linked"
    for split in ("train", "test"):
        (linked / split).mkdir(parents=True)
        for c in COUNTS:
            (linked / split / c).symlink_to(real / split / c, target_is_directory=True)
    # a class folder of links to files
    files = linked / "train" / "fox"
    files.mkdir()
    for f in sorted((real / "train" / "ant").iterdir()):
        (files / f.name).symlink_to(f)
    (linked / "test" / "fox").symlink_to(real / "test" / "ant", target_is_directory=True)
    b = load_data(_cfg(linked).data)
    assert b.classes == ["ant", "bee", "cat", "dog", "eel", "fox"]
    assert b.class_counts == [*COUNTS.values(), 20]


def test_a_symlink_loop_is_one_clear_error(folder):
    (folder / "train" / "bee" / "again").symlink_to(folder / "train", target_is_directory=True)
    with pytest.raises(DataError, match="symbolic link to .*a folder that contains it"):
        load_data(_cfg(folder).data)


def test_mixed_sizes_name_data_size(tmp_path):
    root = make_folder(tmp_path / "m")
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match=r"differs from .*set data.size.*--set data.size="):
        load_data(_cfg(root).data)
    assert load_data(_cfg(root, "data.size=8").data).image_size == (8, 8)


def test_the_cache_goes_to_the_cache_dir_never_the_data_folder(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NCOLLAPSE_CACHE", str(tmp_path / "cache"))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    os.chmod(folder, 0o555)  # a shared, read-only dataset folder
    try:
        b = load_data(_cfg(folder).data)
    finally:
        os.chmod(folder, 0o755)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert Path(b.info["cache"]["cache_path"]).parent == tmp_path / "cache"
    assert list((tmp_path / "cache").glob("mine-*.npz"))
    monkeypatch.delenv("NCOLLAPSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from ncollapse.data.files import default_cache_dir

    assert default_cache_dir() == tmp_path / "xdg" / "ncollapse"
    asked = load_data(_cfg(folder, f"data.cache_dir={folder / 'here'}").data)  # unless asked
    assert Path(asked.info["cache"]["cache_path"]).parent == folder / "here"


@pytest.mark.slow
def test_the_command_line_trains_on_260_images_and_says_so(folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "ncollapse", "train", "--set", "data.name=imagefolder"]
    cmd += ["--set", f"data.root={folder}", "--epochs", "1", "--out", str(tmp_path / "runs")]
    cmd += ["--name", "mine", "--set", "run.progress=log"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "training on 260 images of 5 classes (first class 'ant': 20, last class 'eel': 25)" in (
        proc.stderr
    )
    assert "capped" not in proc.stderr
    data = json.loads((tmp_path / "runs" / "mine" / "data.json").read_text())
    assert data["num_train"] == 260 and data["class_counts"] == list(COUNTS.values())
    # the accuracy line: class-balanced first, no class-index split (classes not sorted by size)
    assert "class-balanced" in proc.stdout and "by class index" not in proc.stdout
