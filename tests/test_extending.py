"""Adding a loss, a head, a method, a schedule or an optimiser from outside the package: one
definition and one registry line each (which also declares the config keys it reads), and the
CLI, the config checks and the engine take them up (docs/architecture.md)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import ncollapse
from ncollapse.cli import main
from ncollapse.config import INF, option
from ncollapse.criterion import Batch, Criterion
from ncollapse.engine.optimizers import OPTIMIZERS
from ncollapse.engine.schedule import SCHEDULES, Schedule
from ncollapse.errors import ConfigError
from ncollapse.heads import HEADS, HeadOutput, register_head
from ncollapse.losses import LOSSES, LossContext, register_loss
from ncollapse.methods import METHODS

QUIET = {"run": {"progress": "none", "tensorboard": False, "threads": 1}}


class SquaredError(Criterion):
    """A toy loss: squared distance of the softmax to the one-hot label (with mixup)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, batch: Batch, out: HeadOutput) -> torch.Tensor:
        p = out.logits.softmax(1)

        def err(y: torch.Tensor) -> torch.Tensor:
            return (p - F.one_hot(y, self.num_classes).to(p.dtype)).pow(2).sum(1).mean()

        return batch.lam * err(batch.y) + (1 - batch.lam) * err(batch.y_b)


@pytest.fixture
def toy_loss():
    @register_loss("toy_squared")
    def build(ctx: LossContext) -> Criterion:
        return SquaredError(len(ctx.class_counts))

    yield "toy_squared"
    LOSSES.unregister("toy_squared")


def test_a_loss_registered_from_outside_trains_an_epoch(tmp_path, toy_loss):
    result = ncollapse.train(
        overrides={**QUIET, "model": {"head": "linear"}, "loss": {"name": toy_loss}},
        epochs=1,
        out=tmp_path,
        name="toy",
    )
    assert result.run.config_dict()["loss"]["name"] == "toy_squared"
    train = [r for r in result.run.metrics() if r["kind"] == "train"]
    assert len(train) == 1 and 0 < train[0]["loss"] < 2
    assert 0.0 <= result.summary["final"]["acc"] <= 1.0


def test_a_registered_loss_is_a_valid_choice_on_the_command_line(tmp_path, toy_loss, capsys):
    argv = ["train", "--epochs", "1", "--out", str(tmp_path), "--json"]
    sets = ["--set", "model.head=linear", "--set", "run.progress=none"]
    assert main([*argv, *sets, "--set", f"loss.name={toy_loss}"]) == 0
    assert json.loads(capsys.readouterr().out)["final"]["acc"] >= 0
    assert main([*argv, *sets, "--set", "loss.name=toy_squard"]) == 2
    assert "did you mean 'toy_squared'" in capsys.readouterr().err


class DoubleLinear(torch.nn.Module):
    """A toy head: two stacked linear maps (the features are the hidden layer)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(in_features, hidden)
        self.out = torch.nn.Linear(hidden, num_classes)

    def forward(self, f: torch.Tensor) -> HeadOutput:
        h = torch.relu(self.hidden(f))
        return HeadOutput(h, self.out(h))

    def classifier_weight(self) -> torch.Tensor:
        return self.out.weight


def test_a_head_and_a_method_registered_from_outside(tmp_path):
    register_head("toy_double", DoubleLinear, options=lambda m: {"hidden": 8 * m.width})
    METHODS.register("toy_method", {"model": {"head": "toy_double"}, "loss": {"name": "ce"}})
    try:
        cfg = ncollapse.compose(method="toy_method", overrides=QUIET, out=tmp_path)
        assert cfg.model.head == "toy_double" and cfg.name == "toy_method"
        result = ncollapse.train(method="toy_method", overrides=QUIET, epochs=1, out=tmp_path)
        assert result.summary["collapse"]["train"]["nc1"] is not None  # 8-d hidden features
    finally:
        HEADS.unregister("toy_double")
        METHODS.unregister("toy_method")
    with pytest.raises(ConfigError, match="unknown method 'toy_method'"):
        ncollapse.compose(method="toy_method")


class ScaledSquaredError(SquaredError):
    """The toy loss on ``scale * logits``: a loss with an option of its own."""

    def __init__(self, num_classes: int, scale: float) -> None:
        super().__init__(num_classes)
        self.scale = scale

    def __call__(self, batch: Batch, out: HeadOutput) -> torch.Tensor:
        return super().__call__(batch, HeadOutput(out.features, self.scale * out.logits))


@pytest.fixture
def toy_loss_with_option():
    @register_loss(
        "toy_scaled",
        options={"loss.toy_scale": option(1.0, "logit scale", range=(0, INF, "()"))},
        requires={"model.head": ("linear", "cosine")},
    )
    def build(ctx: LossContext) -> Criterion:
        return ScaledSquaredError(len(ctx.class_counts), ctx.cfg.loss.toy_scale)

    yield "toy_scaled"
    LOSSES.unregister("toy_scaled")


def test_a_loss_with_its_own_option_is_one_registration(tmp_path, toy_loss_with_option, capsys):
    over = {**QUIET, "model": {"head": "linear"}, "loss": {"name": "toy_scaled", "toy_scale": 2}}
    cfg = ncollapse.compose(overrides=over)
    assert cfg.loss.toy_scale == 2.0 and ncollapse.compose().loss.toy_scale == 1.0
    with pytest.raises(ConfigError, match="did you mean 'loss.toy_scale'"):
        ncollapse.compose(overrides=["loss.toy_scal=2"])
    with pytest.raises(ConfigError, match=r"loss.toy_scale' must be in \(0, inf\)"):
        ncollapse.compose(overrides={**over, "loss": {"name": "toy_scaled", "toy_scale": 0}})
    with pytest.raises(ConfigError, match="needs model.head=linear or cosine"):
        ncollapse.compose(overrides={**over, "model": {"head": "etf"}})
    argv = ["train", "--epochs", "1", "--out", str(tmp_path), "--name", "scaled", "--json"]
    sets = ["model.head=linear", "run.progress=none", "loss.name=toy_scaled", "loss.toy_scale=2"]
    assert main([*argv, *(x for s in sets for x in ("--set", s))]) == 0
    run = ncollapse.Run(tmp_path / "scaled")
    assert run.config_dict()["loss"]["toy_scale"] == 2.0
    assert json.loads(capsys.readouterr().out)["final"]["acc"] >= 0
    LOSSES.unregister("toy_scaled")  # the key goes with the loss that declared it
    with pytest.raises(ConfigError, match="unknown config key 'loss.toy_scale'"):
        ncollapse.compose(overrides=["loss.toy_scale=2"])


def test_a_schedule_and_an_optimizer_registered_from_outside(tmp_path):
    made = []

    def plain_sgd(params, optim):
        made.append(optim.optimizer)
        return torch.optim.SGD(params, lr=optim.lr)

    def constant(optim, epoch, progress):
        return optim.lr * optim.toy_level

    OPTIMIZERS.register("toy_sgd", plain_sgd)
    SCHEDULES.register(
        "toy_constant",
        Schedule(constant, lambda optim, epoch: False),
        options={"optim.toy_level": option(0.5, "the share of optim.lr the rate stays at")},
    )
    try:
        over = {**QUIET, "optim": {"optimizer": "toy_sgd", "schedule": "toy_constant"}}
        over["optim"]["toy_level"] = 0.25
        result = ncollapse.train(overrides=over, epochs=2, out=tmp_path, name="toys")
        assert made == ["toy_sgd"]
        lrs = [r["lr"] for r in result.run.metrics() if r["kind"] == "train"]
        assert lrs == [pytest.approx(0.1 * 0.25)] * 2
        with pytest.raises(ConfigError, match="did you mean 'toy_sgd'"):
            ncollapse.compose(overrides=["optim.optimizer=toy_sdg"])
    finally:
        OPTIMIZERS.unregister("toy_sgd")
        SCHEDULES.unregister("toy_constant")
