"""Heads: ETF frame as a persistent buffer, feature norms, linear (frozen) heads, build_head."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from ncollapse.geometry import simplex_etf
from ncollapse.heads import CosineHead, ETFHead, HeadOutput, LinearHead, build_head

D, K, B = 12, 5, 16


def _f(seed: int = 0, b: int = B, d: int = D) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))


def test_etf_head_output_and_frame():
    head = ETFHead(D, K, seed=3)
    out = head(_f())
    assert isinstance(out, HeadOutput)
    assert out.features.shape == (B, D) and out.logits.shape == (B, K)
    assert torch.equal(head.frame, simplex_etf(D, K, seed=3))
    assert not head.frame.requires_grad
    assert "frame" in head.state_dict()
    assert "frame" not in dict(head.named_parameters())
    # bn_l2: unit-norm features, logits are cosines to the vertices
    assert torch.allclose(out.features.norm(dim=1), torch.ones(B), atol=1e-5)
    assert torch.allclose(out.logits, out.features @ head.frame, atol=1e-6)
    w = head.classifier_weight()
    assert w.shape == (K, D) and torch.equal(w, head.frame.T)


def test_etf_head_scale_and_norms():
    f = _f(1)
    h1 = ETFHead(D, K, scale=1.0)
    h5 = ETFHead(D, K, scale=5.0)
    o1, o5 = h1(f), h5(f)
    assert torch.allclose(o5.logits, 5.0 * o1.logits, atol=1e-5)
    assert torch.equal(h5.classifier_weight(), h1.classifier_weight())  # unscaled
    bn = ETFHead(D, K, feature_norm="bn")
    ob = bn(f)
    assert not torch.allclose(ob.features.norm(dim=1), torch.ones(B), atol=1e-3)
    assert isinstance(bn.bn, nn.BatchNorm1d) and bn.bn.affine
    none = ETFHead(D, K, feature_norm="none")
    assert torch.equal(none(f).features, f)
    assert len(list(none.parameters())) == 0
    with pytest.raises(ValueError, match="feature_norm"):
        ETFHead(D, K, feature_norm="l2")


def test_etf_head_too_narrow_raises():
    with pytest.raises(ValueError, match=r"no simplex ETF of 10 classes exists in 5 dimensions"):
        ETFHead(5, 10)
    ETFHead(9, 10)  # d = K - 1 is fine


def test_etf_frame_fixed_under_sgd_weight_decay_and_state_dict_roundtrip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, D))
    head = ETFHead(D, K, seed=7)
    full = nn.ModuleDict({"backbone": model, "head": head})
    frame0 = head.frame.clone()
    opt = torch.optim.SGD(full.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    x = torch.randn(B, 8)
    y = torch.arange(B) % K
    for _ in range(3):
        out = head(model(x))
        loss = nn.functional.cross_entropy(10 * out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(head.frame, frame0)  # untouched by steps and weight decay
    assert not torch.equal(head.bn.weight.detach(), torch.ones(D))  # BN affine did learn

    buf = io.BytesIO()
    torch.save(full.state_dict(), buf)
    buf.seek(0)
    # a fresh head with a *different* seed must get the saved frame back on load
    model2 = nn.Sequential(nn.Linear(8, D))
    head2 = ETFHead(D, K, seed=99)
    full2 = nn.ModuleDict({"backbone": model2, "head": head2})
    assert not torch.equal(head2.frame, frame0)
    full2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(head2.frame, frame0)
    full.eval()
    full2.eval()
    with torch.no_grad():
        a = head(model(x)).logits
        b = head2(model2(x)).logits
    assert torch.equal(a, b)


def test_linear_head_and_frozen():
    f = _f(2)
    lin = LinearHead(D, K)
    out = lin(f)
    assert torch.equal(out.features, f)
    assert torch.allclose(out.logits, f @ lin.linear.weight.T + lin.linear.bias)
    assert lin.classifier_weight() is lin.linear.weight
    assert all(p.requires_grad for p in lin.parameters())
    fr = LinearHead(D, K, frozen=True)
    assert not any(p.requires_grad for p in fr.parameters())
    nb = LinearHead(D, K, bias=False)
    assert nb.linear.bias is None


def test_build_head():
    assert isinstance(build_head("etf", D, K, scale=2.0), ETFHead)
    assert build_head("etf", D, K, scale=2.0).scale == 2.0
    lin = build_head("linear", D, K)
    assert isinstance(lin, LinearHead) and not lin.frozen
    fr = build_head("linear-frozen", D, K)
    assert isinstance(fr, LinearHead) and fr.frozen
    cos = build_head("cosine", D, K, scale=4.0)
    assert isinstance(cos, CosineHead) and cos.scale == 4.0
    with pytest.raises(ValueError, match=r"did you mean 'cosine'"):
        build_head("cosin", D, K)


def test_cosine_head_logits_are_scaled_cosines():
    f = _f(3)
    head = CosineHead(D, K, scale=2.5)
    with torch.no_grad():
        head.weight.mul_(7.0)  # the norm of the class vectors must not matter
    out = head(f)
    cos = torch.nn.functional.cosine_similarity(f[:, None, :], head.weight[None, :, :], dim=2)
    assert torch.allclose(out.logits, 2.5 * cos, atol=1e-5)
    assert torch.allclose(out.features, f / f.norm(dim=1, keepdim=True), atol=1e-6)
    w = head.classifier_weight()
    assert w.shape == (K, D) and torch.allclose(w.norm(dim=1), torch.ones(K), atol=1e-6)
    assert torch.allclose(out.logits, 2.5 * out.features @ w.T, atol=1e-5)
    # the logits are invariant to the feature norm, and the class vectors are trained
    assert torch.allclose(head(3.0 * f).logits, out.logits, atol=1e-5)
    out.logits.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    # re-applying the head to its own features gives the same logits (AllNC's reversed branch)
    assert torch.allclose(head(out.features).logits, out.logits, atol=1e-5)
    with pytest.raises(ValueError, match="scale > 0"):
        CosineHead(D, K, scale=0.0)
