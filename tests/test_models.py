"""Backbone registry and the CIFAR ResNets (the paper's CIFAR backbones)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncollapse.models import BACKBONES, build_backbone, register_backbone


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet32_params_and_shape():
    m = build_backbone("resnet32", in_channels=3)
    assert m.out_features == 64
    # 0.46M: 463,504 without the fc; + a 10-way fc (650) = 464,154, the published figure
    assert _nparams(m) == 463_504
    assert _nparams(m) + 64 * 10 + 10 == 464_154
    m.eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_resnet32_structure_option_a():
    m = build_backbone("resnet32")
    blocks = [b for b in m.modules() if b.__class__.__name__ == "BasicBlock"]
    assert len(blocks) == 15
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 31  # stem + 2 per block: no projection convs (option A)
    assert {c.out_channels for c in convs} == {16, 32, 64}


def test_resnet32_width2_for_cifar100():
    m = build_backbone("resnet32", width=2)
    assert m.out_features == 128
    m.eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 128)


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 9), ("resnet44", 21), ("resnet56", 27)])
def test_other_depths(name, blocks):
    m = build_backbone(name)
    assert sum(b.__class__.__name__ == "BasicBlock" for b in m.modules()) == blocks
    assert m.out_features == 64


def test_digits_cnn_and_mlp():
    m = build_backbone("digits_cnn", in_channels=1)
    assert m.out_features == 64
    assert m(torch.randn(3, 1, 8, 8)).shape == (3, 64)
    assert _nparams(m) < 100_000
    mlp = build_backbone("mlp", in_channels=1)
    assert mlp(torch.randn(3, 1, 8, 8)).shape == (3, mlp.out_features)
    mlp2 = build_backbone("mlp", in_channels=3, input_size=3 * 32 * 32, hidden_size=32)
    assert mlp2(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="input_size"):
        mlp(torch.randn(2, 3, 32, 32))


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="resnet32") as e:
        build_backbone("resnet33")
    assert "digits_cnn" in str(e.value)


def test_register_backbone():
    name = "_test_tiny"

    @register_backbone(name)
    def tiny(in_channels=3, width=1):
        m = nn.Sequential(nn.Flatten(), nn.LazyLinear(4 * width))
        m.out_features = 4 * width
        return m

    try:
        assert build_backbone(name, width=2).out_features == 8
        with pytest.raises(ValueError, match="already"):
            register_backbone(name)(tiny)
    finally:
        BACKBONES.unregister(name)


@pytest.mark.parametrize("backbone,width", [("fastnet", 2), ("resnet32", 1), ("mlp", 1)])
@pytest.mark.parametrize("classes", [10, 100, 129, 1000])
def test_grow_width_gives_the_etf_the_dimensions_it_needs(backbone, width, classes):
    """model.grow_width: the smallest width from model.width up whose feature hosts a simplex
    ETF of K vertices (K - 1 dimensions); a feature wide enough already is left as it is."""
    import ncollapse
    from ncollapse.build import build_network

    over = [f"model.backbone={backbone}", f"model.width={width}", "model.grow_width=true"]
    cfg = ncollapse.compose(method="etf_dr", overrides=over)
    in_channels = 1 if backbone == "mlp" else 3
    plain = build_backbone(backbone, in_channels=in_channels, width=width).out_features
    net = build_network(cfg, classes, in_channels)
    d = net.backbone.out_features
    assert d >= classes - 1 and net.head.frame.shape == (d, classes)
    if plain >= classes - 1:
        assert d == plain and not hasattr(net.backbone, "grown")
    else:  # the narrowest width that fits: one step narrower would not
        grown = int(net.backbone.grown.split(" at width ")[1].split()[0])
        narrower = build_backbone(backbone, in_channels=in_channels, width=grown - 1)
        assert grown > width and narrower.out_features < classes - 1


def test_grow_width_refusals():
    import ncollapse
    from ncollapse.build import build_network
    from ncollapse.errors import ConfigError

    class Fixed(nn.Module):  # a backbone whose feature does not grow with the width
        out_features = 8

        def forward(self, x):
            return x.flatten(1)[:, :8]

    if "fixed_feature_test" not in BACKBONES:
        register_backbone("fixed_feature_test")(lambda in_channels=3, width=1: Fixed())
    over = ["model.grow_width=true", "model.backbone=fixed_feature_test"]
    cfg = ncollapse.compose(method="etf_dr", overrides=over)
    with pytest.raises(ConfigError, match="has no width up to 64"):
        build_network(cfg, 100, 1)
    cfg = ncollapse.compose(
        "cifar10_lt_r100_etf_dr", overrides=["model.grow_width=true", "model.pretrained=w.pt"]
    )
    with pytest.raises(ConfigError, match="pretrained weights"):
        build_network(cfg, 1000, 3)
    # without it, a too-narrow feature is refused with the width that would do
    cfg = ncollapse.compose("cifar10_lt_r100_etf_dr")
    with pytest.raises(ConfigError, match="model.width=16"):
        build_network(cfg, 1000, 3)


def test_a_network_too_large_for_the_memory_is_refused_before_allocation(monkeypatch):
    """The size is counted on the meta device: nothing is allocated before the refusal."""
    import ncollapse.build as build
    from ncollapse.composition import compose
    from ncollapse.errors import ConfigError

    cfg = compose(overrides=["model.width=2"])
    net = build.build_network(cfg, 10, 1)  # fits
    n = sum(t.numel() for t in (*net.backbone.parameters(), *net.backbone.buffers()))
    need = build.TRAINING_COPIES * 4 * (n + net.backbone.out_features * 10)
    monkeypatch.setattr(build, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=r"model.width=2 gives the digits_cnn backbone 2\d\d "
                       r"thousand parameters.*lower model.width \(1 gives 66.2 thousand"):  # fmt: skip
        build.build_network(cfg, 10, 1)
    monkeypatch.setattr(build, "available_memory", lambda: need)
    build.build_network(cfg, 10, 1)
