"""The captured training step (``run.step=graph``, ncollapse.engine.graphs): the option, its
fallback with one line where no CUDA graph can be captured, and, on the CPU, the same step run
uncaptured from its static inputs (an epoch's draws up front, the last smaller batch apart)
against the eager step. The CUDA tests at the end (skipped without a GPU) check the captured
step itself against the eager one."""

from __future__ import annotations

import functools
import os
import signal
import types

import pytest
import torch

import ncollapse
from ncollapse.composition import compose
from ncollapse.data import load_data
from ncollapse.engine import graphs
from ncollapse.engine.distributed import SINGLE
from ncollapse.engine.graphs import (
    STEPS,
    WARMUP_STEPS,
    GraphStep,
    graph_unavailable,
    state_signature,
)
from ncollapse.errors import ConfigError, Preempted
from ncollapse.runner import build_trainer, run_training
from test_preemption import _same_run

QUIET = {"progress": "none", "tensorboard": False, "threads": 1}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(overrides=(), epochs=3, device="cpu", static=False, method=None):
    cfg = compose(
        None, method, [f"run.{k}={v}" for k, v in QUIET.items()] + list(overrides), epochs=epochs
    )
    trainer = build_trainer(cfg, load_data(cfg.data), torch.device(device))
    if static:  # the captured step's operations, run uncaptured
        trainer.graph = GraphStep(trainer, capture=False)
    return trainer


def _train(trainer, epochs):
    records = [trainer.train_epoch(e) for e in range(epochs)]
    weights = {k: v.detach().clone() for k, v in trainer.eval_network.state_dict().items()}
    return records, weights


def test_run_step_is_a_declared_key_with_its_registered_values():
    assert STEPS.names() == ("eager", "graph") and STEPS.default == "eager"
    assert compose().run.step == "eager"
    assert compose(overrides=["run.step=graph"]).run.step == "graph"
    with pytest.raises(ConfigError, match=r"run.step.*one of eager, graph.*did you mean 'graph'"):
        compose(overrides=["run.step=grpah"])


def test_on_the_cpu_graph_falls_back_to_the_eager_step_with_one_line(tmp_path):
    over = {"run": {**QUIET, "step": "graph"}}
    with pytest.warns(UserWarning) as caught:
        graph = ncollapse.train(overrides=over, epochs=2, out=tmp_path, name="graph")
    lines = [str(w.message) for w in caught if "run.step" in str(w.message)]
    assert lines == [
        "run.step=graph: CUDA graphs need a CUDA device and this run trains on the cpu; "
        "training with the eager step"
    ]
    eager = ncollapse.train(overrides={"run": QUIET}, epochs=2, out=tmp_path, name="eager")
    a, b = torch.load(graph.run_dir / "model.pt"), torch.load(eager.run_dir / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the eager step, bit for bit
    assert graph.run.env()["step"] == "eager" and eager.run.env()["step"] == "eager"


def _fake(**kw):
    """A trainer as graph_unavailable sees it, on a CUDA device, everything capturable."""
    from ncollapse.engine.batches import ResidentBatches

    batches = ResidentBatches.__new__(ResidentBatches)
    batches.extra_weights = {}
    base = {
        "device": torch.device("cuda"),
        "dist": SINGLE,
        "batches": batches,
        "criterion": types.SimpleNamespace(state_dict=dict),
        "scaler": torch.amp.GradScaler("cuda", enabled=False),
        "optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
        "optim": types.SimpleNamespace(optimizer="sgd"),
        "_step_hooks": [],
    }
    return types.SimpleNamespace(**{**base, **kw})


def test_each_reason_a_step_cannot_be_captured_is_named():
    assert graph_unavailable(_fake()) is None
    streamed = _fake(batches=object())
    assert "DataLoader workers" in graph_unavailable(streamed)
    extra = _fake()
    extra.batches.extra_weights = {"reversed": torch.ones(3)}
    assert graph_unavailable(extra) == "the loss draws extra batches (reversed)"
    state = _fake(criterion=types.SimpleNamespace(state_dict=lambda: {"memory": 1}))
    assert "running state" in graph_unavailable(state)
    adamw = _fake(
        optimizer=torch.optim.AdamW([torch.zeros(1, requires_grad=True)]),
        optim=types.SimpleNamespace(optimizer="adamw"),
    )
    assert graph_unavailable(adamw) == (
        "only the sgd optimiser's step is captured (optim.optimizer=adamw)"
    )

    class Probe(ncollapse.engine.Callback):
        def on_step_end(self, trainer, epoch):
            pass

    assert graph_unavailable(_fake(_step_hooks=[Probe()])) == (
        "the callback Probe runs Python after every step"
    )
    assert "data-parallel under torchrun" in graph_unavailable(
        _fake(dist=types.SimpleNamespace(enabled=True))
    )


# the static step, uncaptured, against the eager step: the same draws, rates, weight average and
# last batch, to float rounding (the rate and mixup's coefficient are read from tensors)
LEVERS = [
    "optim.mixup_alpha=1.0",
    "data.augment=standard",
    "optim.batch_size=100",  # 411 digits: four batches of 100 and a last one of 11
    "optim.ema=0.9",
    "optim.ema_start=1",
    "optim.grad_clip=1.0",
    "optim.schedule=cosine",
    "optim.warmup_epochs=0.5",
    "optim.mixup_epochs=2",
    "run.amp=false",
]


@pytest.mark.parametrize("method", ["etf_dr", "ce"])
def test_the_static_step_trains_as_the_eager_step(method):
    eager, static = (_trainer(LEVERS, static=s, method=method) for s in (False, True))
    assert static.graph.full == 4 and len(static.batches) == 5  # the last batch uncaptured
    (ra, wa), (rb, wb) = _train(eager, 3), _train(static, 3)
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], rel=1e-4)
    assert eager.average.updates == static.average.updates == 2 * 5
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=1e-3, msg=k)
    start = _trainer(LEVERS, method=method).network.state_dict()
    assert max(float((wa[k] - start[k]).abs().max()) for k in start) > 0.01  # it trained


def test_a_batch_that_is_the_whole_epoch_is_never_captured():
    trainer = _trainer(["optim.batch_size=500", "run.amp=false"], epochs=1, static=True)
    assert trainer.graph.full == 0 and len(trainer.batches) == 1  # 411 < 500: one short step
    record = trainer.train_epoch(0)
    assert record["loss"] > 0 and int(trainer.graph.counter) == 0


def test_a_failed_capture_says_why_and_goes_on_uncaptured(monkeypatch):
    """As if on a GPU: warmed up, then the capture raises; the step runs uncaptured instead,
    and the epoch equals the uncaptured one."""
    trainer = _trainer(["run.amp=false"], epochs=1, static=True)
    reference = _trainer(["run.amp=false"], epochs=1, static=True)
    trainer.graph.capture, trainer.graph.warm = True, WARMUP_STEPS

    class Refused:
        def __init__(self, graph):
            pass

        def __enter__(self):
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", Refused)
    with pytest.warns(UserWarning) as caught:
        record = trainer.train_epoch(0)
    assert [str(w.message) for w in caught] == [
        "run.step=graph: the training step could not be captured as a CUDA graph (RuntimeError: "
        "operation not permitted when stream is capturing); the run goes on with the same step "
        "uncaptured"
    ]
    assert trainer.graph.capture is False and not trainer.graph.graphs
    assert record["loss"] == reference.train_epoch(0)["loss"]


def test_a_criterion_that_changes_its_tensors_changes_its_signature():
    """LDAM-DRW and DR with deferred weights switch their class weights on at an epoch: a graph
    captured before would read the old ones, so the step is captured again."""
    for method, extra in (("ldam_drw", []), ("etf_dr", ["loss.drw_epoch=5"])):
        trainer = _trainer(["run.amp=false", *extra], epochs=10, method=method)
        trainer.criterion.set_epoch(0)
        before = state_signature(trainer.criterion)
        trainer.criterion.set_epoch(1)
        assert state_signature(trainer.criterion) == before, method
        trainer.criterion.set_epoch(9)
        assert state_signature(trainer.criterion) != before, method


def test_a_signal_inside_an_epoch_of_the_captured_step_resumes_to_the_uninterrupted_run(
    tmp_path, monkeypatch
):
    """SIGTERM between two captured steps (here the captured step's operations run uncaptured,
    on the CPU): a checkpoint inside the epoch, with the weight average running and a last
    smaller batch; the resume trains the rows left and ends with the uninterrupted run's
    weights and records, bit for bit."""
    monkeypatch.setattr(graphs, "graph_unavailable", lambda trainer: None)
    monkeypatch.setattr(graphs, "GraphStep", functools.partial(GraphStep, capture=False))

    def cfg(name):
        sets = [f"run.{k}={v}" for k, v in QUIET.items()] + ["run.step=graph", "run.amp=false"]
        sets += [*LEVERS[:8], f"run.out_dir={tmp_path}", f"run.name={name}"]
        return compose(None, "etf_dr", sets, epochs=3)

    full = run_training(cfg("full"))
    assert full.run_dir.joinpath("env.json").read_text().count('"step": "graph"') == 1
    original, count = GraphStep._step, [0]

    def step(self, row, ema):
        original(self, row, ema)
        count[0] += 1
        if count[0] == 7:  # step 2 of epoch 2 (5 steps per epoch: 4 captured, 1 smaller)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(GraphStep, "_step", step)
    with pytest.raises(Preempted, match="in epoch 2 after step 2 of 5"):
        run_training(cfg("cut"))
    monkeypatch.setattr(GraphStep, "_step", original)
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["position"]["step"], ckpt["ema"]["updates"]) == (1, 2, 2)
    run_training(resume=tmp_path / "cut")
    _same_run(full.run_dir, tmp_path / "cut")


# ---------------------------------------------------------------------------------- on a GPU


def _cuda_pair(overrides, epochs):
    eager = _trainer(overrides, epochs=epochs, device="cuda")
    graph = _trainer([*overrides, "run.step=graph"], epochs=epochs, device="cuda")
    assert graph.graph is not None and graph.graph.capture
    return eager, graph


@CUDA
@pytest.mark.parametrize(("amp", "epochs", "tol"), [("false", 3, 1e-3), ("true", 1, 5e-2)])
def test_cuda_the_captured_step_trains_as_the_eager_step(amp, epochs, tol):
    """fp32 (TF32 convolutions in both) over three epochs to the CPU test's tolerance; bf16 over
    one epoch, to bf16's."""
    eager, graph = _cuda_pair([*LEVERS[:-1], f"run.amp={amp}"], epochs=3)
    (ra, wa), (rb, wb) = _train(eager, epochs), _train(graph, epochs)
    assert graph.graph.capture and False in graph.graph.graphs  # captured, and replayed
    if epochs > 1:
        assert set(graph.graph.graphs) == {False, True}  # without the average, then with it
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], rel=tol)
    for k in wa:
        torch.testing.assert_close(wb[k].float(), wa[k].float(), rtol=tol, atol=tol, msg=k)


@CUDA
def test_cuda_captured_equals_uncaptured_bit_for_bit():
    """The captured step and the same step uncaptured are the same kernels: a captured run
    resumed (its first steps uncaptured again) is the uninterrupted one."""
    over = [*LEVERS[:-1], "run.amp=true"]
    graph = _trainer([*over, "run.step=graph"], device="cuda")
    plain = _trainer(over, device="cuda")
    plain.graph = GraphStep(plain, capture=False)
    (_, wa), (_, wb) = _train(graph, 3), _train(plain, 3)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@CUDA
def test_cuda_the_official_recipe_step_is_captured():
    """ResNet-32, crop + flip, mixup, DR with per-batch class weights, bf16: captured, and a
    pass of random CIFAR-shaped images trains as the eager step does."""
    from ncollapse.data.base import ArrayDataset, DataBundle

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (1000,), generator=g)
    ds = ArrayDataset(images, labels, [str(i) for i in range(10)])
    counts = torch.bincount(labels, minlength=10).tolist()
    bundle = DataBundle(ds, ds, counts, {}, (0.5,) * 3, (0.25,) * 3, "standard")
    out = []
    for step in ("eager", "graph"):
        cfg = compose(
            "cifar10_lt_r100_etf_dr",
            overrides=[f"run.step={step}", "run.progress=none", "optim.warmup_epochs=0"],
        )
        trainer = build_trainer(cfg, bundle, torch.device("cuda"))
        out.append((trainer, trainer.train_epoch(0)))
    (_, ra), (graph, rb) = out
    assert graph.graph is not None and graph.graph.capture and graph.graph.graphs
    assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-2)
