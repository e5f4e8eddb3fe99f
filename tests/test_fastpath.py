"""The short-schedule levers of the engine: smooth schedules, mixup cut-off, weight averaging,
flip TTA, deferred re-sampling, validation-only evaluation, bf16 autocast with float32
measurement, and the fastnet backbone."""

from __future__ import annotations

import itertools
import math
import types

import pytest
import torch

import ncollapse
from ncollapse.composition import compose
from ncollapse.engine.ema import WeightAverage
from ncollapse.engine.evaluate import network_outputs
from ncollapse.engine.precision import autocast_dtype
from ncollapse.engine.schedule import lr_at
from ncollapse.errors import ConfigError
from ncollapse.models import build_backbone

QUIET = {"run": {"progress": "none", "tensorboard": False, "threads": 1}}


def _optim(**kw):
    base = dict(
        lr=0.4, epochs=10, warmup_epochs=1.0, schedule="linear", final_lr=0.0, milestones=[],
        gamma=0.1, lr_factors=None,
    )  # fmt: skip
    return types.SimpleNamespace(**{**base, **kw})


def test_linear_and_cosine_schedules_ramp_then_decay_to_the_floor():
    o = _optim()
    assert lr_at(o, 0, 0.5) == pytest.approx(0.2)  # half-way through the warm-up
    assert lr_at(o, 0, 1.0) == pytest.approx(0.4)
    assert lr_at(o, 5, 0.5) == pytest.approx(0.4 * (1 - 4.5 / 9))
    assert lr_at(o, 9, 1.0) == pytest.approx(0.0)
    c = _optim(schedule="cosine", final_lr=0.1)
    assert lr_at(c, 5, 0.5) == pytest.approx(
        0.4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    )
    assert lr_at(c, 9, 1.0) == pytest.approx(0.04)
    steps = [lr_at(o, e, (b + 1) / 4) for e in range(10) for b in range(4)]
    assert max(steps) == pytest.approx(0.4) and steps[-1] == pytest.approx(0.0)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(steps[4:]))  # monotone after warm-up


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_smooth_schedules_without_a_warmup_start_at_the_full_rate(schedule):
    """``optim.warmup_epochs=0`` is no warm-up (it raised ZeroDivisionError at the start of the
    first epoch, where the loop asks for the rate with progress 0): the rate starts at ``lr``
    and decays from there as it would after a warm-up."""
    o = _optim(schedule=schedule, warmup_epochs=0)
    assert lr_at(o, 0, 0.0) == pytest.approx(0.4)
    assert lr_at(o, 5, 0.0) == pytest.approx(0.2)  # half-way: both shapes are at one half
    assert lr_at(o, 9, 1.0) == pytest.approx(0.0)
    steps = [lr_at(o, e, b / 4) for e in range(10) for b in range(5)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(steps))  # decays from the start


def test_step_schedule_with_per_milestone_factors():
    o = _optim(schedule="step", warmup_epochs=0, milestones=[4, 8], lr_factors=[0.01, 0.0001])
    assert [lr_at(o, e) for e in (0, 4, 8)] == pytest.approx([0.4, 0.004, 0.00004])


def test_weight_average_keeps_fixed_buffers_and_tracks_weights():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net.register_buffer("frame", torch.randn(3, 3))
    avg = WeightAverage(net, decay=0.9)
    frame = net.frame.clone()
    for _ in range(50):
        with torch.no_grad():
            net[0].weight.add_(0.01)
        net(torch.randn(8, 4))  # moves the BatchNorm statistics
        avg.update(net)
    assert torch.equal(avg.module.frame, frame)  # a constant stays bit-identical
    lag = (net[0].weight - avg.module[0].weight).mean()
    # behind the live weights, by about decay / (1 - decay) steps
    assert 0 < float(lag.detach()) < 0.2
    assert avg.module[1].num_batches_tracked == net[1].num_batches_tracked
    state = avg.state_dict()
    fresh = WeightAverage(net, decay=0.9)
    fresh.load_state_dict(state)
    assert fresh.updates == 50 and torch.equal(fresh.module[0].weight, avg.module[0].weight)


def test_weight_average_moves_by_exactly_one_minus_the_warmed_up_decay():
    """``a <- a + (1 - d) (x - a)`` with ``d = min(decay, (1 + n) / (10 + n))``: the exact
    values after the first updates (float64: no rounding in the comparison)."""
    net = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = WeightAverage(net, decay=0.9)
    expected = 0.0
    for n, x in enumerate([1.0, 2.0, 4.0, -1.0]):
        with torch.no_grad():
            net.weight.fill_(x)
        avg.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        expected += (1 - d) * (x - expected)
        assert float(avg.module.weight) == pytest.approx(expected, abs=1e-15)
    with torch.no_grad():
        net.weight.fill_(1.0)
    first = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(11.0)
    first.update(net)  # d = 1/10: nine tenths of the way
    assert float(first.module.weight) == 10.0


def test_mixup_stops_at_exactly_optim_mixup_epochs(tmp_path):
    """optim.mixup_epochs=2: epochs 0 and 1 (0-based) mix, epoch 2 no longer does."""
    from ncollapse.data import load_data
    from ncollapse.runner import build_trainer

    cfg = compose(overrides=["optim.mixup_alpha=1.0", "optim.mixup_epochs=2", "optim.epochs=3"])
    trainer = build_trainer(cfg, load_data(cfg.data), torch.device("cpu"))
    seen = []
    real = trainer.batches.epoch

    def spy(epoch, seed, alpha, **kw):
        steps = list(real(epoch, seed, alpha, **kw))
        seen.append((alpha, all(s.batch.lam != 1.0 for s in steps)))  # every batch mixed
        return iter(steps)

    trainer.batches.epoch = spy
    for epoch in range(3):
        trainer.train_epoch(epoch)
    assert seen == [(1.0, True), (1.0, True), (0.0, False)]


def test_measurements_are_float32_under_autocast():
    """Features and logits that reach the accumulators and the argmax are float32 even when
    the caller trains under bf16 autocast."""
    net = ncollapse.build_head("etf", 16, 4)
    body = torch.nn.Sequential(torch.nn.Linear(8, 16), net)
    x = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, logits, _ = next(network_outputs(body, [(x, torch.zeros(32))]))
    assert feats.dtype == torch.float32 and logits.dtype == torch.float32
    with torch.no_grad():
        ref = body.eval()(x)
    assert torch.allclose(logits, ref.logits, atol=1e-6)  # computed in fp32, not bf16


def test_flip_tta_averages_the_mirror_logits():
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 2 * 3, 5))
    body = torch.nn.Sequential(body, ncollapse.build_head("linear", 5, 3))
    x = torch.randn(4, 3, 2, 2)
    _, plain, _ = next(network_outputs(body, [(x, None)]))
    _, mirrored, _ = next(network_outputs(body, [(x.flip(3), None)]))
    _, tta, _ = next(network_outputs(body, [(x, None)], tta=True))
    assert torch.allclose(tta, 0.5 * (plain + mirrored), atol=1e-6)


def test_autocast_dtype_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("NCOLLAPSE_CPU_BF16", "1")
    assert autocast_dtype(cpu, True) == torch.bfloat16 and autocast_dtype(cpu, False) is None
    monkeypatch.setenv("NCOLLAPSE_CPU_BF16", "0")
    assert autocast_dtype(cpu, True) is None


@pytest.mark.slow
def test_fast_levers_train_end_to_end_with_validation_only(tmp_path):
    """Digits with the short-schedule levers on: linear decay, mixup for the first half,
    weight averaging, class-balanced re-sampling at the end, accuracy on the validation split
    only (no test evaluation at all). (No flips: mirrored digits are other digits.)"""
    over = {
        **QUIET,
        "data": {"val": "unused", "val_per_class": 10},
        "optim": {
            "schedule": "linear", "warmup_epochs": 1, "mixup_alpha": 0.4, "mixup_epochs": 3,
            "ema": 0.9, "ema_start": 2, "balanced_from": 5,
        },
        "eval": {"splits": ["val"], "every": 0, "collapse_splits": ["train"]},
    }  # fmt: skip
    result = ncollapse.train(overrides=over, epochs=6, out=tmp_path, name="fast")
    s = result.summary
    assert s["final"] == {} and s["val"]["acc"] > 0.5 and s["weights"] == "average"
    evals = [r for r in result.run.metrics() if r["kind"] == "eval"]
    assert [(r["epoch"], r["split"]) for r in evals] == [(6, "val")]  # once, at the end
    data = result.run.data()
    assert 0 < sum(data["val_counts"]) <= 10 * 10  # at most val_per_class per class
    lrs = [r["lr"] for r in result.run.metrics() if r["kind"] == "train"]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and max(lrs) > lrs[-1]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_resume_with_the_fast_levers_is_exact(tmp_path, monkeypatch, device):
    """Killed after epoch 2 and resumed: the weight average, the per-batch cosine rate and
    the mixup cut-off continue exactly (same weights as the uninterrupted run), on the CPU and
    on a GPU (bit-identical there too on an H200, 2026-11-28)."""
    from test_engine import cut_after_two_epochs

    over = {
        "run": {**QUIET["run"], "device": device},
        "optim": {"schedule": "cosine", "warmup_epochs": 0.5, "ema": 0.8, "mixup_epochs": 2},
        "eval": {"every": 0, "collapse_splits": ["train"]},
    }
    full = ncollapse.train(overrides=over, epochs=4, out=tmp_path, name="full")
    cut_after_two_epochs(
        monkeypatch, ncollapse.train, overrides=over, epochs=4, out=tmp_path, name="cut"
    )
    resumed = ncollapse.train(resume=tmp_path / "cut")
    a, b = torch.load(full.run_dir / "model.pt"), torch.load(resumed.run_dir / "model.pt")
    assert resumed.summary["weights"] == "average"
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_checks_of_the_new_keys():
    with pytest.raises(ConfigError, match="optim.schedule"):
        compose(overrides=["optim.schedule=onecycle"])
    with pytest.raises(ConfigError, match="optim.ema"):
        compose(overrides=["optim.ema=1.0"])
    with pytest.raises(ConfigError, match="data.val=unused"):
        compose(overrides=["eval.splits=[val]"])
    with pytest.raises(ConfigError, match="eval.splits"):
        compose(overrides=["eval.splits=[train]"])
    cfg = compose("cifar10_lt_r100_etf_dr", overrides=["optim.mixup_epochs=160"], epochs=20)
    assert cfg.optim.mixup_epochs == 16  # scaled with the schedule


def test_fastnet_backbone_shapes_and_width():
    for w, d in ((2, 128), (4, 256)):
        net = build_backbone("fastnet", in_channels=3, width=w)
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, d) and net.out_features == d
    assert build_backbone("fastnet", in_channels=1, width=1)(torch.randn(2, 1, 28, 28)).shape == (
        2,
        64,
    )
