"""The engine's training step is the released code's plain PyTorch step, update for update.

The released CIFAR code of Yang et al. (and of LDAM, which it builds on) trains with
``torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=wd)`` (weight decay on every
parameter, BatchNorm and biases included), sets the rate once per epoch, and with mixup computes
``lam * CE(out, y_a) + (1 - lam) * CE(out, y_b)``. These tests record what the engine fed each
step (the mixed images, both label vectors, the coefficient, the rate) and the weights it started
from, replay them through such a plain loop, and require the same weights, BatchNorm statistics
included, at the end. So a gap between ``ncollapse train`` and a plain loop of the same recipe can
only come from what the two draw (data order, crops, flips, mixup, initial weights) or from the
precision they compute in, not from the update itself.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from ncollapse.composition import compose
from ncollapse.engine.loop import Trainer
from ncollapse.runner import run_training


def _record_and_train(tmp_path, monkeypatch, method, **over):
    steps: list[tuple] = []
    start: dict[str, dict] = {}
    original = Trainer._step

    def spy(self, step):
        if not start:
            start["state"] = copy.deepcopy(self.network.state_dict())
        b = step.batch
        lr = self.optimizer.param_groups[0]["lr"]
        y_b = None if b.y_b is None else b.y_b.clone()
        steps.append((step.x.clone(), b.y.clone(), y_b, float(b.lam), lr))
        return original(self, step)

    monkeypatch.setattr(Trainer, "_step", spy)
    sets = [
        f"run.out_dir={tmp_path}",
        "run.progress=none",
        "run.tensorboard=false",
        "run.amp=false",  # the released code trains in float32
        "run.channels_last=false",  # and in NCHW, so the same kernels run in both loops
        "optim.epochs=3",
        "optim.warmup_epochs=2",
        "optim.milestones=[2]",
        "optim.mixup_alpha=1.0",
        "eval.collapse_every=0",
        f"run.name={method}",
    ]
    sets += [f"{k}={v}" for k, v in over.items()]
    cfg = compose(method=method, overrides=sets)
    res = run_training(cfg)
    final = torch.load(res.run_dir / "model.pt")
    return cfg, start["state"], steps, final


def _plain_replay(cfg, start_state, steps, loss_fn, decay_all=True):
    from ncollapse.build import build_network

    net = build_network(cfg, 10, 1)
    net.load_state_dict(start_state)
    net.train()
    o = cfg.optim
    if decay_all:  # the released code: weight decay on every parameter
        groups = [{"params": list(net.parameters())}]
    else:  # a common variant: none on BatchNorm parameters and biases
        params = list(net.parameters())
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    for x, y, y_b, lam, lr in steps:
        for g in opt.param_groups:
            g["lr"] = lr
        out = net(x)
        if y_b is None:
            loss = loss_fn(out, y)
        else:
            loss = lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y_b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.state_dict()


def _assert_same_weights(got, want, atol):
    assert set(got) == set(want)
    for name, value in want.items():
        assert torch.allclose(got[name].float(), value.float(), rtol=1e-4, atol=atol), name


@pytest.mark.parametrize("head_init", ["default", "kaiming_normal"])
def test_ce_step_is_the_released_codes_plain_step(tmp_path, monkeypatch, head_init):
    cfg, start, steps, final = _record_and_train(
        tmp_path, monkeypatch, "ce", **{"model.head_init": head_init}
    )
    assert len(steps) > 20 and any(s[2] is not None and 0 < s[3] < 1 for s in steps)  # mixup ran
    rates = sorted({round(s[4], 8) for s in steps})
    assert rates == [0.001, 0.05, 0.1] or rates == [0.01, 0.05, 0.1]  # warm-up, full, decayed
    plain = _plain_replay(cfg, start, steps, lambda out, y: F.cross_entropy(out.logits, y))
    _assert_same_weights(plain, final, atol=1e-5)
    # the run really trained: the weights moved far more than the tolerance
    moved = max((final[k].float() - start[k].float()).abs().max() for k in start)
    assert moved > 1e-2


def test_the_replay_can_tell_a_different_update_apart(tmp_path, monkeypatch):
    """The comparison is not vacuous: the released step without weight decay on the
    BatchNorm parameters (a common variant), or with the mixup weights swapped, ends elsewhere."""
    cfg, start, steps, final = _record_and_train(tmp_path, monkeypatch, "ce")
    swapped = [(x, y, y_b, 1 - lam, lr) for x, y, y_b, lam, lr in steps]
    plain = _plain_replay(cfg, start, swapped, lambda out, y: F.cross_entropy(out.logits, y))
    with pytest.raises(AssertionError):
        _assert_same_weights(plain, final, atol=1e-5)
    no_bn_decay = _plain_replay(
        cfg, start, steps, lambda out, y: F.cross_entropy(out.logits, y), decay_all=False
    )
    with pytest.raises(AssertionError):
        _assert_same_weights(no_bn_decay, final, atol=1e-5)
