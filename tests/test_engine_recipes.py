"""The ImageNet-LT, iNaturalist-2018 and fine-grained recipes: they compose and build the network
they promise without any data (backbones on PyTorch's meta device, so no weights are allocated;
the 1,000-vertex frame is built for real and checked)."""

from __future__ import annotations

import pytest
import torch

import ncollapse
from ncollapse.build import build_network
from ncollapse.geometry import etf_gram_error
from ncollapse.heads import build_head_from_config
from ncollapse.models import build_backbone

RECIPES = {
    # recipe: (classes, feature dimension, head, loss)
    "imagenet_lt_etf_dr": (1000, 4096, "etf", "dr"),
    "imagenet_lt_ce": (1000, 4096, "linear", "ce"),
    "inat2018_etf_dr": (8142, 8192, "etf", "dr"),
    "inat2018_ce": (8142, 8192, "linear", "ce"),
    "finegrained_etf_dr": (200, 2048, "etf", "dr"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_and_builds_its_network(recipe):
    k, dim, head, loss = RECIPES[recipe]
    cfg = ncollapse.compose(recipe)
    assert cfg.name == recipe and cfg.model.head == head and cfg.loss.name == loss
    with torch.device("meta"):
        net = build_network(cfg, k, in_channels=3)
    assert net.backbone.out_features == dim
    assert tuple(net.classifier_weight().shape) == (k, dim)
    if head == "etf":
        assert tuple(net.head.frame.shape) == (dim, k) and dim >= k - 1  # an ETF exists
        assert cfg.model.feature_norm == "bn" and cfg.loss.reg_lam == 0.01


@pytest.mark.parametrize("recipe", ["imagenet_lt_etf_dr", "inat2018_etf_dr"])
def test_large_scale_recipes_are_the_released_imagenet_lt_values(recipe):
    cfg = ncollapse.compose(recipe)
    o = cfg.optim
    assert (o.batch_size, o.lr, o.weight_decay, o.epochs) == (1024, 0.1, 5e-4, 90)
    assert (o.schedule, o.warmup_epochs, o.final_lr, o.mixup_alpha) == ("cosine", 0, 0.0, 0.2)
    assert cfg.data.name == "listfile" and cfg.data.size == 224
    assert cfg.model.backbone == "resnet50_4096" and cfg.loss.balance == "batch"
    assert cfg.run.loss_batch == "global"  # the release's DataParallel: weights of the whole batch


def _check_recipe_frame(recipe: str, d: int, k: int) -> None:
    """The recipe's ETF head, built for real: a d x k frame of unit, centred columns."""
    head = build_head_from_config(ncollapse.compose(recipe).model, d, k)
    frame = head.frame.double()
    assert frame.shape == (d, k)
    assert torch.allclose(frame.norm(dim=0), torch.ones(k, dtype=torch.float64), atol=1e-5)
    assert float(frame.sum(dim=1).abs().max()) < 1e-4
    assert etf_gram_error(frame) < 1e-5


def test_imagenet_lt_frame_is_a_simplex_etf():
    _check_recipe_frame("imagenet_lt_etf_dr", 4096, 1000)


@pytest.mark.slow
def test_inat2018_frame_is_a_simplex_etf():
    """The 8,142-vertex frame in 8192 dimensions, built for real (float64 QR of 8192 x 8142 and
    the Gram check: about two minutes on one busy CPU core, hence slow)."""
    _check_recipe_frame("inat2018_etf_dr", 8192, 8142)


def test_finegrained_recipe_takes_the_users_weights(tmp_path):
    cfg = ncollapse.compose("finegrained_etf_dr", overrides=[f"model.pretrained={tmp_path}/w.pth"])
    assert cfg.model.pretrained.endswith("w.pth") and cfg.model.backbone == "resnet50"
    assert cfg.data.name == "imagefolder" and cfg.data.size == 224
    # random weights in a torchvision-style file (with its fc) start the recipe's network
    torch.manual_seed(3)
    state = dict(build_backbone("resnet50").state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    torch.save(state, tmp_path / "w.pth")
    torch.manual_seed(4)  # another initialisation, replaced by the file's weights
    net = build_network(cfg, 5, in_channels=3)
    got = net.backbone.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in got)
    assert etf_gram_error(net.head.frame) < 1e-5
