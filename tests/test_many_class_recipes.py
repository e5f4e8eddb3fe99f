"""The many-class recipes: the 100-class dev-set recipes (ETF + DR and its tuned cross-entropy
counterpart, at imbalance ratio 100 and 10), the recipe for a user's own image folder, and the
mechanism they rest on: the DR loss at the head's scale moves the BatchNorm-normalised layers as
far per step as cross-entropy does, where the loss at scale 1 moved them about five times less
(docs/many_classes.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ncollapse
from ncollapse.build import build_network
from ncollapse.criterion import Batch
from ncollapse.data import load_data
from ncollapse.engine.state import resolve_device
from ncollapse.runner import build_trainer

ROOT = Path(__file__).resolve().parents[1]

#: recipe -> (benchmarks/many_classes.py trial it was measured as, imbalance factor)
DEV_RECIPES = {
    "tinyimagenet100_lt_r100_fast": ("dr_s10_global_drw24", 0.01),
    "tinyimagenet100_lt_r100_ce": ("ce_mix02_drw24", 0.01),
    "tinyimagenet100_lt_r10_fast": ("dr_s10_global_drw24", 0.1),
    "tinyimagenet100_lt_r10_ce": ("ce_mix02_drw24", 0.1),
}


def _many_classes():
    spec = importlib.util.spec_from_file_location(
        "many_classes", ROOT / "benchmarks/many_classes.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("many_classes", mod)
    spec.loader.exec_module(mod)
    return mod


def _plain(cfg) -> dict:
    d = cfg.to_dict()
    d.pop("name")
    d["run"].pop("name", None)
    return d


@pytest.mark.parametrize("recipe", sorted(DEV_RECIPES))
def test_dev_recipe_needs_only_the_folder_and_is_the_trial_it_was_chosen_as(recipe, tmp_path):
    """Only data.root to give; and the recipe is, key for key, the validation trial whose runs
    the docs report (so a recipe cannot drift from its measurements)."""
    trial, imbalance = DEV_RECIPES[recipe]
    cfg = ncollapse.compose(recipe, overrides=[f"data.root={tmp_path}"])
    assert cfg.data.name == "imagefolder" and cfg.data.imbalance == imbalance
    assert cfg.data.val == "unused" and cfg.eval.splits == ["val", "test"]
    assert cfg.optim.epochs == 30 and cfg.model.backbone == "fastnet"
    if recipe.endswith("_fast"):
        assert (cfg.model.head, cfg.loss.name, cfg.model.scale) == ("etf", "dr", 10.0)
        assert (cfg.loss.balance, cfg.loss.drw_epoch) == ("global", 24)
    else:
        assert (cfg.model.head, cfg.loss.name, cfg.loss.drw_epoch) == ("linear", "ce", 24)
        assert cfg.optim.mixup_alpha == 0.2
    mc = _many_classes()
    method, extra = mc.TRIALS[trial]
    sets = [*mc.COMMON, f"data.root={tmp_path}", f"data.imbalance={imbalance}", *extra]
    measured = ncollapse.compose(mc.BASE, method=method, overrides=sets, shared_recipe=True)
    assert _plain(cfg) == _plain(measured)


@pytest.mark.parametrize("classes", [2, 10, 100, 129, 130, 1000])
def test_own_folder_recipe_picks_a_feature_for_its_classes(classes, tmp_path):
    """imagefolder_fast: data as given, and a feature of at least K - 1 dimensions for any K up
    to 1,000 (fastnet widened from width 2 only when needed), with a real K-vertex frame."""
    cfg = ncollapse.compose("imagefolder_fast", overrides=[f"data.root={tmp_path}"])
    assert cfg.data.imbalance is None and cfg.data.val == "none" and cfg.model.grow_width
    with torch.device("meta"):
        backbone = build_network(cfg, classes, in_channels=3).backbone
    d = backbone.out_features
    assert d >= classes - 1 and d == 64 * max(2, -(-(classes - 1) // 64))
    net = build_network(cfg, classes, in_channels=3) if classes <= 130 else None
    if net is not None:
        frame = net.head.frame.double()
        gram = frame.T @ frame
        want = torch.full((classes, classes), -1.0 / (classes - 1), dtype=torch.float64)
        want.fill_diagonal_(1.0)
        assert frame.shape == (d, classes) and torch.allclose(gram, want, atol=1e-5)


def _folder(root: Path, classes: int, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        for k in range(classes):
            d = root / split / f"c{k:03d}"
            d.mkdir(parents=True)
            colour = rng.integers(0, 256, (1, 1, 3))
            for i in range(n):
                a = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def test_own_folder_recipe_trains_on_a_small_folder(tmp_path):
    """One epoch of imagefolder_fast through the command line on 12 classes, as given."""
    import subprocess

    root = _folder(tmp_path / "mine", classes=12, per_class=4)
    out = subprocess.run(
        [sys.executable, "-m", "ncollapse", "train", "--config", "imagefolder_fast",
         "--set", f"data.root={root}", "--epochs", "1", "--out", str(tmp_path / "runs"),
         "--set", "run.threads=1", "--set", "run.tensorboard=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training on 48 images of 12 classes" in out.stdout + out.stderr
    run = tmp_path / "runs" / "imagefolder_fast"
    assert (run / "summary.json").is_file()


def _relative_step(recipe: str, root: Path, *extra: str) -> float:
    """lr * ||g|| / ||w|| of the BatchNorm-normalised convolutions at initialisation, on 256
    training images: how far one SGD step moves them."""
    sets = [f"data.root={root}", "data.imbalance=null", "data.val=none", "eval.splits=[test]"]
    cfg = ncollapse.compose(recipe, overrides=[*sets, "run.tensorboard=false", *extra])
    bundle = load_data(cfg.data)
    torch.manual_seed(0)
    trainer = build_trainer(cfg, bundle, resolve_device("cpu"))
    net = trainer.network.train()
    trainer.criterion.set_epoch(0)
    x = trainer.augment.normalize(torch.as_tensor(bundle.train.images[:256]))
    y = torch.as_tensor(bundle.train.labels[:256]).long()
    trainer.criterion(Batch(y), net.head(net.backbone(x))).backward()
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)][1:]
    steps = [cfg.optim.lr * float(c.weight.grad.norm() / c.weight.detach().norm()) for c in convs]
    return sum(steps) / len(steps)


def test_dr_at_the_heads_scale_steps_like_cross_entropy_on_100_classes(tmp_path):
    """The mechanism behind the many-class recipe: at 100 classes the DR loss at scale 1 moves the
    normalised convolutions about five times less per step than cross-entropy does (it trained
    too slowly in a short schedule); at the recipe's scale 10 it moves them about as far."""
    root = _folder(tmp_path / "k100", classes=100, per_class=3)
    ce = _relative_step("tinyimagenet100_lt_r100_ce", root)
    dr = _relative_step("tinyimagenet100_lt_r100_fast", root)
    dr_at_1 = _relative_step("tinyimagenet100_lt_r100_fast", root, "model.scale=1")
    assert dr_at_1 == pytest.approx(dr / 10, rel=1e-3)  # DR(s h) = s DR(h): the step scales too
    assert dr_at_1 / ce < 0.35
    assert 0.5 < dr / ce < 4.0
