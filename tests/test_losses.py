"""Losses: dot regression (Yang et al., 2022) and the logit losses, each formula pinned."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ncollapse.geometry import simplex_etf
from ncollapse.losses import (
    BalancedSoftmaxLoss,
    DotRegressionLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MixupCrossEntropy,
    drw_weights,
    ldam_margins,
    posthoc_logit_adjust,
)

D, K, B = 8, 5, 12
COUNTS = [100, 40, 20, 7, 3]
DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(seed: int = 0, b: int = B, unit: bool = False):
    g = _gen(seed)
    h = torch.randn(b, D, generator=g, dtype=DT)
    if unit:
        h = h / h.norm(dim=1, keepdim=True)
    # repeated labels, not all classes present
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 4, 0, 1][:b])
    return h, y


def _frame():
    return simplex_etf(D, K, seed=1, dtype=DT)


# ----------------------------------------------------------------------------- dot regression


def test_dr_unit_vectors_is_half_cos_minus_one_squared():
    h, y = _batch(unit=True)
    m = _frame()
    loss = DotRegressionLoss(balance="none")(h, y, m)
    cos = (h * m[:, y].T).sum(1)
    assert torch.allclose(loss, (0.5 * (cos - 1) ** 2).mean(), atol=1e-12)


def test_dr_gradient_parallel_to_target_vertex():
    h, y = _batch(3)
    h = (3.0 * h).requires_grad_(True)  # non-unit norms
    m = _frame()
    loss = DotRegressionLoss(balance="none")(h, y, m)
    (g,) = torch.autograd.grad(loss, h)
    for i in range(B):
        c = F.cosine_similarity(g[i], m[:, y[i]], dim=0)
        assert abs(abs(float(c)) - 1.0) < 1e-6
    # and its value is ((<h,w> - ||w|| ||h||)/||h||) w / B
    w = m[:, y].T
    hn = h.detach().norm(dim=1)
    expected = (((h.detach() * w).sum(1) - w.norm(dim=1) * hn) / hn)[:, None] * w / B
    assert torch.allclose(g, expected, atol=1e-12)


def _official_batch_reference(h: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Independent reference: the official code's column scaling of M by sqrt(B/|U|/n_c)."""
    b = y.numel()
    labels = y.tolist()
    present = sorted(set(labels))
    scaled = m.clone()
    for c in present:
        scaled[:, c] = m[:, c] * math.sqrt(b / len(present) / labels.count(c))
    total = 0.0
    for i in range(b):
        w = scaled[:, labels[i]]
        hn = h[i].norm()
        total = total + 0.5 * (h[i] @ w - w.norm() * hn) ** 2 / hn
    return total / b


def test_dr_batch_balance_equals_official_column_scaling():
    h, y = _batch(5)
    m = _frame()
    loss = DotRegressionLoss(balance="batch")(h, y, m)
    assert torch.allclose(loss, _official_batch_reference(h, y, m), atol=1e-12)
    # weights sum to B over the batch
    w = DotRegressionLoss(balance="batch").weights(y, K)
    assert math.isclose(float(w[y].sum()), B, rel_tol=1e-6)


def test_dr_mixup_is_linear_and_uses_batch_weights_of_unmixed_labels():
    h, y = _batch(7)
    m = _frame()
    perm = torch.randperm(B, generator=_gen(1))
    yb = y[perm]
    lam = 0.3
    for bal in ("batch", "none"):
        crit = DotRegressionLoss(balance=bal)
        mixed = crit(h, y, m, target_b=yb, lam=lam)
        assert torch.allclose(mixed, lam * crit(h, y, m) + (1 - lam) * crit(h, yb, m), atol=1e-12)
    # with batch balance the partner term uses the weights of `target`, indexed by its own labels
    crit = DotRegressionLoss(balance="batch")
    w = crit.weights(y, K)
    other = torch.full((B,), 4)
    none = DotRegressionLoss(balance="none")
    hn = h.norm(dim=1)
    wv = m[:, other].T
    dr_b = (0.5 * ((h * wv).sum(1) - hn) ** 2 / hn * w[other]).mean()
    got = crit(h, y, m, target_b=other, lam=0.0)
    assert torch.allclose(got, dr_b, atol=1e-12)
    assert not torch.allclose(got, none(h, other, m), atol=1e-6)


def test_dr_partner_of_a_class_absent_from_the_batch_weighs_one():
    """Under mixup a partner label can be a class the un-mixed batch does not hold (one
    process's share under torchrun with run.loss_batch=local): the official code scales only
    the present classes' frame columns, so that class keeps weight 1 (not 0)."""
    h, y = _batch(11)  # classes 0, 1, 2, 4: class 3 is absent
    m = _frame()
    b = y.numel()
    yb = torch.tensor([3, 3, 0, 3, 1, 3, 2, 3, 4, 3, 0, 3])
    present = sorted(set(y.tolist()))
    scaled = m.clone()  # the official column scaling of the un-mixed batch
    for c in present:
        scaled[:, c] = m[:, c] * math.sqrt(b / len(present) / y.tolist().count(c))

    def term(labels):
        w = scaled[:, labels].T
        hn = h.norm(dim=1)
        return (0.5 * ((h * w).sum(1) - w.norm(dim=1) * hn) ** 2 / hn).mean()

    lam = 0.25
    got = DotRegressionLoss(balance="batch")(h, y, m, target_b=yb, lam=lam)
    assert torch.allclose(got, lam * term(y) + (1 - lam) * term(yb), atol=1e-12)
    assert float(DotRegressionLoss(balance="batch").weights(y, K)[3]) == 1.0


def test_dr_global_weights_and_reg():
    h, y = _batch(9)
    m = _frame()
    crit = DotRegressionLoss(balance="global", class_counts=COUNTS)
    n = torch.tensor(COUNTS, dtype=DT)
    a = (n.sum() / K) / n
    per = torch.stack(
        [DotRegressionLoss(balance="none")(h[i : i + 1], y[i : i + 1], m) for i in range(B)]
    )
    assert torch.allclose(crit(h, y, m), (a[y] * per).mean(), atol=1e-12)
    with pytest.raises(ValueError, match="class_counts"):
        DotRegressionLoss(balance="global")
    with pytest.raises(ValueError, match="batch, none, global"):
        DotRegressionLoss(balance="class")
    # reg_lam adds reg_lam * mean ||h||, with a gradient
    base = DotRegressionLoss(balance="none")
    reg = DotRegressionLoss(balance="none", reg_lam=0.01)
    assert torch.allclose(reg(h, y, m) - base(h, y, m), 0.01 * h.norm(dim=1).mean(), atol=1e-12)
    hg = h.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(reg(hg, y, m) - base(hg, y, m), hg)
    assert torch.allclose(g1, 0.01 * h / h.norm(dim=1, keepdim=True) / B, atol=1e-12)


def test_dr_balance_power_tempers_the_global_weights():
    h, y = _batch(4)
    m = _frame()
    n = torch.tensor(COUNTS, dtype=DT)
    for p in (0.0, 0.5, 1.0, 2.0):
        crit = DotRegressionLoss(balance="global", class_counts=COUNTS, balance_power=p)
        a = ((n.sum() / K) / n) ** p
        a = a * n.sum() / (n * a).sum()
        assert torch.allclose(crit.class_weight, a, atol=1e-12)
        # the mean weight over the training samples is 1 whatever p: the loss keeps its size
        assert math.isclose(float((n * crit.class_weight).sum() / n.sum()), 1.0, rel_tol=1e-12)
    # p = 1 is the plain global weighting (N/K)/n_c; p = 0 weighs nothing
    assert torch.allclose(
        DotRegressionLoss(balance="global", class_counts=COUNTS).class_weight, (n.sum() / K) / n
    )
    none = DotRegressionLoss(balance="none")(h, y, m)
    zero = DotRegressionLoss(balance="global", class_counts=COUNTS, balance_power=0.0)(h, y, m)
    assert torch.allclose(zero, none, atol=1e-12)
    with pytest.raises(ValueError, match="balance_power"):
        DotRegressionLoss(balance="global", class_counts=COUNTS, balance_power=-1.0)


def test_dr_scale_multiplies_loss_and_gradient():
    """DR(s h) = s DR(h): the scale is a loss weight (the same SGD steps as lr x s, wd / s)."""
    h, y = _batch(6)
    m = _frame()
    hb = h[torch.randperm(B, generator=_gen(1))]
    for balance in ("none", "batch"):
        for s in (0.5, 10.0):
            plain = DotRegressionLoss(balance=balance, reg_lam=0.01)
            scaled = DotRegressionLoss(balance=balance, reg_lam=0.01, scale=s)
            h1 = h.clone().requires_grad_(True)
            h2 = h.clone().requires_grad_(True)
            l1 = plain(h1, y, m, target_b=y.flip(0), lam=0.3)
            l2 = scaled(h2, y, m, target_b=y.flip(0), lam=0.3)
            assert torch.allclose(l2, s * l1, atol=1e-12)
            (g1,) = torch.autograd.grad(l1, h1)
            (g2,) = torch.autograd.grad(l2, h2)
            assert torch.allclose(g2, s * g1, atol=1e-12)
    assert not torch.allclose(DotRegressionLoss(scale=2.0)(hb, y, m), DotRegressionLoss()(hb, y, m))
    with pytest.raises(ValueError, match="scale"):
        DotRegressionLoss(scale=0.0)


def test_dr_deferred_weights_switch_on_at_their_epoch():
    from ncollapse.heads import ETFHead
    from ncollapse.losses.dr import DRCriterion

    head = ETFHead(D, K).double()
    h, y = _batch(2)
    out = head(h)
    m = head.frame
    crit = DRCriterion(DotRegressionLoss(balance="global", class_counts=COUNTS), head, defer=3)
    from ncollapse.criterion import Batch

    unweighted = DotRegressionLoss(balance="none")(out.features, y, m)
    weighted = DotRegressionLoss(balance="global", class_counts=COUNTS)(out.features, y, m)
    assert not torch.allclose(unweighted, weighted)
    for epoch, want in ((0, unweighted), (2, unweighted), (3, weighted), (7, weighted)):
        crit.set_epoch(epoch)
        assert torch.allclose(crit(Batch(y), out), want, atol=1e-12), epoch


def test_dr_options_in_the_config():
    import ncollapse
    from ncollapse.errors import ConfigError

    cfg = ncollapse.compose(
        method="etf_dr",
        overrides=["loss.balance=global", "loss.balance_power=0.5", "loss.drw_epoch=10"],
    )
    assert (cfg.loss.balance_power, cfg.loss.drw_epoch) == (0.5, 10)
    # --epochs scales the deferral with the schedule (the digits recipe has 30 epochs)
    assert (
        ncollapse.compose(
            method="etf_dr", overrides=["loss.drw_epoch=15"], epochs=60
        ).loss.drw_epoch
        == 30
    )
    with pytest.raises(ConfigError, match="balance_power=0.5 tempers the global"):
        ncollapse.compose(method="etf_dr", overrides=["loss.balance_power=0.5"])
    with pytest.raises(ConfigError, match="loss.balance=none has none"):
        ncollapse.compose(method="etf_dr", overrides=["loss.balance=none", "loss.drw_epoch=3"])
    with pytest.raises(ConfigError, match="must be in"):
        ncollapse.compose(method="etf_dr", overrides=["loss.balance_power=-1"])


def test_dr_float32_frame_with_head():
    from ncollapse.heads import ETFHead

    head = ETFHead(D, K)
    out = head(torch.randn(B, D))
    loss = DotRegressionLoss()(out.features, _batch()[1], head.frame)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ----------------------------------------------------------------------------- logit losses


def _logits(seed: int = 0):
    g = _gen(seed)
    z = torch.randn(B, K, generator=g, dtype=DT)
    y = torch.randint(0, K, (B,), generator=g)
    yb = torch.randint(0, K, (B,), generator=g)
    return z, y, yb


def test_la_and_balanced_softmax_formulas():
    z, y, _ = _logits(1)
    n = torch.tensor(COUNTS, dtype=DT)
    prior = n / n.sum()
    la = LogitAdjustedLoss(COUNTS, tau=1.5)
    assert torch.allclose(la(z, y), F.cross_entropy(z + 1.5 * prior.log(), y), atol=1e-12)
    bs = BalancedSoftmaxLoss(COUNTS)
    assert torch.allclose(bs(z, y), F.cross_entropy(z + n.log(), y), atol=1e-12)
    # balanced softmax == LA at tau = 1 (the log N shift cancels in the softmax)
    assert torch.allclose(bs(z, y), LogitAdjustedLoss(COUNTS, tau=1.0)(z, y), rtol=0, atol=1e-12)


def test_focal_formula_and_gamma_zero_is_ce():
    z, y, _ = _logits(2)
    assert torch.allclose(FocalLoss(gamma=0.0)(z, y), F.cross_entropy(z, y), atol=1e-12)
    p = F.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    fl = (-((1 - p) ** 2) * p.log()).mean()
    assert torch.allclose(FocalLoss(gamma=2.0)(z, y), fl, atol=1e-12)
    w = torch.arange(1.0, K + 1)
    f = FocalLoss(gamma=2.0, weight=w)
    wy = w.double()[y]
    assert torch.allclose(f(z, y), (wy * -((1 - p) ** 2) * p.log()).sum() / wy.sum(), atol=1e-6)


def test_ldam_margins_and_loss():
    m = ldam_margins(COUNTS, max_margin=0.5)
    n = torch.tensor(COUNTS, dtype=DT)
    ratio = m / n.pow(-0.25)
    assert torch.allclose(ratio, ratio[0].expand(K), atol=1e-12)  # proportional to n^-1/4
    assert math.isclose(float(m.max()), 0.5) and int(m.argmax()) == K - 1
    z, y, _ = _logits(3)
    crit = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0)
    zz = z.clone()
    zz[torch.arange(B), y] -= m[y]
    assert torch.allclose(crit(z, y), F.cross_entropy(30.0 * zz, y), atol=1e-5)
    w = drw_weights(COUNTS)
    crit.set_class_weight(w)
    assert torch.allclose(crit(z, y), F.cross_entropy(30.0 * zz, y, weight=w.double()), atol=1e-5)
    crit.set_class_weight(None)
    assert torch.allclose(crit(z, y), F.cross_entropy(30.0 * zz, y), atol=1e-5)


def test_drw_weights_formula():
    beta = 0.999
    w = drw_weights(COUNTS, beta=beta)
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in COUNTS], dtype=DT)
    assert torch.allclose(w.double(), raw / raw.sum() * K, atol=1e-6)
    assert math.isclose(float(w.sum()), K, rel_tol=1e-6)
    assert bool((w[1:] > w[:-1]).all())  # rarer classes weigh more
    assert torch.allclose(drw_weights(COUNTS, beta=0.0), torch.ones(K))


def test_mixup_linearity_for_every_logit_loss():
    z, y, yb = _logits(4)
    lam = 0.35
    losses = [
        MixupCrossEntropy(),
        MixupCrossEntropy(weight=drw_weights(COUNTS)),
        LogitAdjustedLoss(COUNTS, tau=1.0),
        BalancedSoftmaxLoss(COUNTS),
        FocalLoss(gamma=1.0),
        LDAMLoss(COUNTS),
    ]
    for crit in losses:
        mixed = crit(z, y, target_b=yb, lam=lam)
        assert torch.allclose(mixed, lam * crit(z, y) + (1 - lam) * crit(z, yb), atol=1e-10), crit
        assert torch.allclose(crit(z, y, target_b=yb, lam=1.0), crit(z, y), atol=1e-12)
    assert torch.allclose(MixupCrossEntropy()(z, y), F.cross_entropy(z, y), atol=1e-12)


def test_posthoc_logit_adjust():
    z, _, _ = _logits(5)
    n = torch.tensor(COUNTS, dtype=DT)
    out = posthoc_logit_adjust(z, COUNTS, tau=0.5)
    assert torch.allclose(out, z - 0.5 * (n / n.sum()).log(), atol=1e-12)
    # tau = 1 on balanced-softmax-style logits favours the tail
    flat = torch.zeros(1, K, dtype=DT)
    assert int(posthoc_logit_adjust(flat, COUNTS).argmax()) == K - 1


def test_bad_counts():
    with pytest.raises(ValueError, match="positive counts"):
        LogitAdjustedLoss([10, 0, 3])
