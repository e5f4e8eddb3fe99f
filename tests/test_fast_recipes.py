"""The fast recipes: they load, they are the ETF + DR method on the short-schedule levers, and one
epoch of the recipe runs end to end (on generated 32x32 images standing in for CIFAR)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ncollapse

FAST = [
    "cifar10_lt_r100_fast",
    "cifar10_lt_r50_fast",
    "cifar10_lt_r10_fast",
    "cifar100_lt_r100_fast",
]


@pytest.mark.parametrize("name", FAST)
def test_fast_recipes_load_and_keep_the_method(name):
    cfg = ncollapse.compose(name)
    assert (cfg.model.head, cfg.model.feature_norm, cfg.loss.name, cfg.loss.balance) == (
        "etf",
        "bn_l2",
        "dr",
        "global",  # class weights from the training counts, chosen on validation (docs/speed.md)
    )
    assert cfg.model.backbone == "fastnet" and cfg.optim.schedule == "linear"
    assert cfg.optim.milestones == [] and cfg.eval.every == 0 and cfg.eval.tta
    k = 100 if name.startswith("cifar100") else 10
    width = 64 * cfg.model.width
    assert width >= k - 1  # the feature hosts the K-vertex ETF
    assert cfg.data.imbalance == {"r100": 0.01, "r50": 0.02, "r10": 0.1}[name.split("_")[2]]
    if k == 100:  # the many-class changes, at the dev-set recipe's share of the schedule
        dev = ncollapse.compose("tinyimagenet100_lt_r100_fast")
        assert cfg.model.scale == dev.model.scale == 10.0
        share = cfg.loss.drw_epoch / cfg.optim.epochs
        assert share == pytest.approx(
            dev.loss.drw_epoch / dev.optim.epochs, abs=0.5 / cfg.optim.epochs
        )
    else:  # ten classes keep the recipe chosen on CIFAR-10
        assert cfg.model.scale == 1.0 and cfg.loss.drw_epoch is None


def _cifar_like(root: Path, classes: int = 10, per_class: int = 12, test: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = 40 * (c + 1) % 256  # a little signal per class
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_one_epoch_of_the_fast_recipe_runs(tmp_path):
    root = _cifar_like(tmp_path / "data")
    over = {
        "data": {
            "name": "imagefolder",
            "root": str(root),
            "class_order": [f"c{c}" for c in range(10)],
            "imbalance": 0.2,
            "val": "unused",
            "val_per_class": 2,
            "cache_dir": str(tmp_path / "cache"),
        },
        "eval": {"splits": ["val", "test"], "collapse_splits": ["train"]},
        "optim": {"batch_size": 16, "ema_start": 0},
        "run": {"progress": "none", "tensorboard": False, "threads": 1},
    }
    result = ncollapse.train(
        "cifar10_lt_r100_fast", overrides=over, epochs=1, out=tmp_path / "runs"
    )
    s = result.summary
    assert s["epochs"] == 1 and s["weights"] == "average"
    assert 0 <= s["final"]["acc"] <= 1 and 0 <= s["val"]["acc"] <= 1
    assert s["collapse"]["train"]["nc1"] is not None
