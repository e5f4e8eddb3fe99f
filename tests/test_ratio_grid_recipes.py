"""The released grid of imbalance ratios (imb_factor 0.005, 0.01, 0.02: ratios 200, 100, 50) for
CIFAR-10-LT and CIFAR-100-LT, ETF + DR and CE: every recipe composes to its ratio and method on
the official recipe; the ratio-200 ones build their network and take a training step (on random
images everywhere, on the real long-tailed CIFAR-10 subset where the data is found)."""

from __future__ import annotations

import pytest
import torch

import ncollapse
from ncollapse.build import build_criterion, build_network
from ncollapse.criterion import Batch
from ncollapse.data import load_data
from ncollapse.data.longtail import long_tail_counts
from ncollapse.errors import DataError

#: the released code's configurations: imb_factor for each ratio
FACTORS = {"r200": 0.005, "r100": 0.01, "r50": 0.02}
#: method -> (head, loss)
METHODS = {"etf_dr": ("etf", "dr"), "ce": ("linear", "ce")}
GRID = [f"{ds}_lt_{r}_{m}" for ds in ("cifar10", "cifar100") for r in FACTORS for m in METHODS]
R200 = [name for name in GRID if "_r200_" in name]


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: on a machine shared with training runs, two threads spin against them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _parts(name: str) -> tuple[str, str, str]:
    dataset, _, ratio, *method = name.split("_")
    return dataset, ratio, "_".join(method)


@pytest.mark.parametrize("name", GRID)
def test_grid_recipe_composes_to_its_ratio_and_method(name):
    dataset, ratio, method = _parts(name)
    cfg = ncollapse.compose(name)
    head, loss = METHODS[method]
    assert cfg.name == name and cfg.data.name == dataset
    assert cfg.data.imbalance == FACTORS[ratio] and cfg.data.profile == "exp"
    assert (cfg.model.head, cfg.loss.name) == (head, loss)
    if method == "etf_dr":  # the released ETF + DR: BN + L2 head, per-batch class weights
        assert (cfg.model.feature_norm, cfg.model.scale, cfg.loss.balance) == (
            "bn_l2",
            1.0,
            "batch",
        )
    # the official recipe around it: ResNet-32 (width 2 for 100 classes), 200 epochs, mixup
    assert cfg.model.backbone == "resnet32"
    assert cfg.model.width == (2 if dataset == "cifar100" else 1)
    assert (cfg.optim.epochs, cfg.optim.milestones, cfg.optim.mixup_alpha) == (200, [160, 180], 1.0)


@pytest.mark.parametrize("name", R200)
def test_ratio_200_recipe_builds_and_takes_a_step(name):
    """The network, criterion and one SGD step of the recipe, on the class counts its long-tail
    subset has (5,000 down to 25 images for CIFAR-10, 500 down to 2 for CIFAR-100)."""
    dataset = _parts(name)[0]
    cfg = ncollapse.compose(name)
    k, n_max = (100, 500) if dataset == "cifar100" else (10, 5000)
    counts = long_tail_counts(n_max, k, cfg.data.imbalance)
    assert counts[0] == n_max and counts[-1] == int(n_max * 0.005)
    torch.manual_seed(0)
    net = build_network(cfg, k, in_channels=3)
    criterion = build_criterion(cfg, net, counts)
    n = max(k, 20)  # every class in the batch
    _one_step(cfg, net, criterion, torch.randn(n, 3, 32, 32), torch.arange(n) % k)


def _one_step(cfg, net, criterion, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(
        net.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    before = [p.detach().clone() for p in net.backbone.parameters()]
    frame = getattr(net.head, "frame", None)
    frame = None if frame is None else frame.clone()
    net.train()
    loss = criterion(Batch(y=y), net(x))
    assert torch.isfinite(loss) and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.backbone.parameters()))
    if frame is not None:  # the fixed ETF is never trained
        assert torch.equal(net.head.frame, frame)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in R200 if n.startswith("cifar10_")])
def test_ratio_200_recipe_starts_on_cifar10(name):
    """Where CIFAR-10 is found (the official files or the JPEG copy), the recipe's long-tailed
    subset has the released code's counts and a step on a real batch trains."""
    cfg = ncollapse.compose(name)
    try:
        bundle = load_data(cfg.data)
    except DataError as exc:
        pytest.skip(f"no CIFAR-10 here: {exc}")
    assert bundle.class_counts == long_tail_counts(5000, 10, 0.005)
    torch.manual_seed(0)
    net = build_network(cfg, 10, in_channels=bundle.in_channels)
    criterion = build_criterion(cfg, net, bundle.class_counts, bundle.train.labels)
    idx = torch.arange(0, len(bundle.train), len(bundle.train) // 64)[:64]  # every class
    x = bundle.train.images[idx].float() / 255.0
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    _one_step(cfg, net, criterion, (x - mean) / std, bundle.train.labels[idx])
