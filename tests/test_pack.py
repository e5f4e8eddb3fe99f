"""Packed runs (``ncollapse sweep --pack N``, ncollapse.engine.pack): several runs of one backbone
shape trained in one process as one batched model, each run directory the same in content as
the run alone (to float rounding): seeds of one method, and two methods (two heads, two losses)
on one backbone; what cannot be packed trains alone, with a line saying why."""

from __future__ import annotations

import json
import os
import signal
import types

import pytest
import torch
import yaml

import ncollapse.runner as runner_mod
from ncollapse.cli import main
from ncollapse.composition import compose
from ncollapse.config import config_to_dict
from ncollapse.data import load_data
from ncollapse.engine.distributed import SINGLE
from ncollapse.engine.loop import Trainer
from ncollapse.engine.pack import PackedTrainer, pack_unavailable
from ncollapse.errors import Preempted, UserError
from ncollapse.rundir import Run as RunDir
from ncollapse.runner import build_trainer, run_packed, run_training
from ncollapse.sweep import run_sweep
from test_preemption import _same_run
from test_sweep import FakeRunner
from test_sweep import _spec as _sweep_spec

QUIET = ["run.progress=none", "run.tensorboard=false", "run.threads=1", "run.amp=false"]
TIMING = ("seconds", "images_per_s")


def _cfg(out, method, seed, extra=(), epochs=2):
    name = f"{method}-s{seed}"
    return compose(None, method, [*QUIET, *extra], epochs=epochs, seed=seed, out=out, name=name)


def _close(a, b, tol):
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_close(x, y, tol) for x, y in zip(a, b))
        )
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=tol, abs=tol)
    return a == b


def _same_run_dir(packed, alone, tol=1e-4):
    """Two run directories hold the same run: the same files, the same config (but for the
    folder each was asked to go to) and data records, the same metrics but for the timings (accuracies equal, the rest to float
    rounding), and the same weights and checkpoint to float rounding."""
    files = sorted(p.name for p in packed.iterdir())
    assert files == sorted(p.name for p in alone.iterdir())
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in (packed, alone)]
    for c in configs:
        del c["run"]["out_dir"]  # where each was asked to go
    assert configs[0] == configs[1]
    assert (packed / "data.json").read_text() == (alone / "data.json").read_text()
    rec = [[json.loads(line) for line in (d / "metrics.jsonl").open()] for d in (packed, alone)]
    assert len(rec[0]) == len(rec[1])
    for a, b in zip(*rec):
        assert a.keys() == b.keys()
        for k in a:
            if k in TIMING:
                continue
            if k in ("acc", "per_class", "many", "medium", "few"):  # counts of right answers
                assert a[k] == b[k], (a["kind"], k)
            else:
                assert _close(a[k], b[k], tol), (a["kind"], k, a[k], b[k])
    for name in ("model.pt", "checkpoint.pt"):
        a = torch.load(packed / name, weights_only=False)
        b = torch.load(alone / name, weights_only=False)
        assert (packed / name).stat().st_size <= 1.01 * (alone / name).stat().st_size  # compact
        if name == "checkpoint.pt":
            assert (
                a["epoch"] == b["epoch"]
                and a["trainer"]["best_epoch"] == b["trainer"]["best_epoch"]
            )
            states = [(s["momentum_buffer"], t["momentum_buffer"]) for s, t in zip(
                a["optimizer"]["state"].values(), b["optimizer"]["state"].values()
            )]  # fmt: skip
            a, b = a["model"], b["model"]
            for x, y in states:
                torch.testing.assert_close(x, y, rtol=tol, atol=tol)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=f"{name} {k}")


@pytest.mark.parametrize(
    "cells", [[("etf_dr", 0), ("etf_dr", 1)], [("ce", 0), ("etf_dr", 0)]], ids=["seeds", "losses"]
)
def test_a_packed_run_is_the_run_alone(tmp_path, cells):
    """Two seeds of ETF + DR, and CE (a learnable linear head) beside ETF + DR (the fixed
    frame): one backbone, two heads and two losses. One epoch (seven steps), evaluated and
    measured: over more steps the rounding differences grow, as between any two machines."""
    logged = []
    cfgs = [_cfg(tmp_path / "pack", m, s, epochs=1) for m, s in cells]
    results = run_packed(cfgs, log=logged.append)
    assert logged == [] and all(isinstance(r, runner_mod.RunResult) for r in results)
    for m, s in cells:
        alone = run_training(_cfg(tmp_path / "alone", m, s, epochs=1))
        packed = tmp_path / "pack" / f"{m}-s{s}"
        _same_run_dir(packed, alone.run_dir)
        env = json.loads((packed / "env.json").read_text())
        assert env["pack"] == [f"{m}-s{s}" for m, s in cells]


def test_what_cannot_be_packed_is_named(tmp_path):
    base = _cfg(tmp_path, "etf_dr", 0)
    bundle = load_data(base.data)

    def trainer(*extra, method="etf_dr", epochs=2):
        cfg = _cfg(tmp_path, method, 0, extra, epochs=epochs)
        return build_trainer(cfg, bundle, torch.device("cpu"))

    first = trainer()
    assert pack_unavailable(first) is None and pack_unavailable(trainer(), first) is None
    assert pack_unavailable(trainer(method="ce"), first) is None  # another head, one backbone
    assert (
        pack_unavailable(trainer("model.width=2"), first) == "the backbone differs from the pack's"
    )
    assert (
        pack_unavailable(trainer(epochs=3), first) == "the number of epochs differs from the pack's"
    )
    assert pack_unavailable(trainer("optim.batch_size=32"), first) == (
        "the batch size differs from the pack's"
    )
    streamed = types.SimpleNamespace(dist=SINGLE, batches=object())  # a StreamingBatches
    assert pack_unavailable(streamed) == "the data streams through DataLoader workers"
    allnc = trainer(method="allnc")
    assert pack_unavailable(allnc) == "the loss draws extra batches (reversed)"
    with pytest.raises(ValueError, match="cannot be packed: the loss draws extra batches"):
        PackedTrainer([first, allnc])


def test_a_run_that_cannot_join_trains_alone_with_a_line(tmp_path):
    logged = []
    cfgs = [
        _cfg(tmp_path, "etf_dr", 0, epochs=1),
        _cfg(tmp_path, "etf_dr", 1, ["model.width=2"], 1),
    ]
    results = run_packed(cfgs, log=logged.append)
    assert logged == ["etf_dr-s1 trains alone, not packed: the backbone differs from the pack's"]
    assert all(isinstance(r, runner_mod.RunResult) for r in results)
    assert "pack" not in json.loads((tmp_path / "etf_dr-s0" / "env.json").read_text())


def test_a_run_that_diverges_stops_alone(tmp_path):
    """One run of the pack diverges in its first epoch: it stops with its message (nothing kept
    of it), the other trains to the end, its weights those of the run alone."""
    cfgs = [
        _cfg(tmp_path / "p", "etf_dr", 0, ["optim.lr=1e12"], 1),
        _cfg(tmp_path / "p", "etf_dr", 1, epochs=1),
    ]
    bad, good = run_packed(cfgs)
    assert isinstance(bad, UserError) and "training diverged in epoch 1" in str(bad)
    assert "was removed" in str(bad) and not (tmp_path / "p" / "etf_dr-s0").exists()
    alone = run_training(_cfg(tmp_path / "a", "etf_dr", 1, epochs=1))
    _same_run_dir(good.run_dir, alone.run_dir)


@pytest.mark.slow
def test_a_packed_run_resumed_is_the_packed_run_uninterrupted(tmp_path, monkeypatch):
    cells = [("ce", 0), ("etf_dr", 1)]
    full = run_packed([_cfg(tmp_path / "full", m, s, epochs=4) for m, s in cells])
    original = PackedTrainer.train_epoch

    class Killed(Exception):
        pass

    def dying(self, epoch):
        if epoch == 2:
            raise Killed
        return original(self, epoch)

    monkeypatch.setattr(PackedTrainer, "train_epoch", dying)
    with pytest.raises(Killed):
        run_packed([_cfg(tmp_path / "cut", m, s, epochs=4) for m, s in cells])
    monkeypatch.setattr(PackedTrainer, "train_epoch", original)
    dirs = [tmp_path / "cut" / f"{m}-s{s}" for m, s in cells]
    resumed = run_packed([None, None], resumes=dirs)
    for a, b in zip(full, resumed):
        wa, wb = torch.load(a.run_dir / "model.pt"), torch.load(b.run_dir / "model.pt")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit


def test_sweep_pack_trains_the_grid_in_packs(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--methods",
        "ce,etf_dr,la",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    args += [x for s in QUIET for x in ("--set", s)]
    assert main([*args, "--pack", "2", "--json"]) == 0
    err = capsys.readouterr().err
    assert "sweep: packing 2 cells into one batched model: ce-ir20-s0, etf_dr-ir20-s0" in err
    assert "sweep: --pack 2: la-ir20-s0 trains alone: the last of its group" in err
    for cell in ("ce-ir20-s0", "etf_dr-ir20-s0", "la-ir20-s0"):
        assert (out / cell / "summary.json").is_file()
    assert "pack" in json.loads((out / "ce-ir20-s0" / "env.json").read_text())
    assert "pack" not in json.loads((out / "la-ir20-s0" / "env.json").read_text())
    assert yaml.safe_load((out / "ce-ir20-s0" / "config.yaml").read_text())["name"] == "ce-ir20-s0"
    assert main([*args, "--pack", "2", "--json"]) == 0  # rerun: everything finished, skipped
    assert capsys.readouterr().err.count("finished earlier, skipped") == 3


class _FakePacked:
    """``run_packed`` without training (test_sweep's FakeRunner for each run); ``kill``: the
    runs' directories are made, then the process "dies" before the first checkpoint."""

    def __init__(self, kill: bool = False) -> None:
        self.kill = kill
        self.calls: list[list[str]] = []

    def __call__(self, cfgs, *, resumes, bundle, prefixes, log):
        self.calls.append([c.name for c in cfgs])
        if self.kill:
            for cfg in cfgs:
                run = RunDir.create(cfg.run.out_dir, cfg.run.name, explicit=True)
                run.write_config(config_to_dict(cfg))
            raise KeyboardInterrupt  # as a SIGKILL leaves them: no checkpoint, no summary
        one = FakeRunner()
        return [one(c, resume=r, bundle=bundle) for c, r in zip(cfgs, resumes)]


def test_sweep_pack_marks_the_cells_it_makes_and_trains_them_again_after_a_kill(
    tmp_path, monkeypatch
):
    """The packs honour the sweep's ``.<cell>.created`` marks as the one-at-a-time loop does: a
    cell is marked before its directory is made, so a packed sweep killed before the first
    checkpoint is rerun (its cells removed and packed again), not refused as someone else's."""
    monkeypatch.setattr(runner_mod, "run_training", FakeRunner())
    out = tmp_path / "sw"
    monkeypatch.setattr(runner_mod, "run_packed", _FakePacked(kill=True))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep_spec(), out, log=None, pack=2)
    first = ["ce-ir20-s0", "la-ir20-s0"]
    assert all((out / c / "config.yaml").is_file() for c in first)
    assert {p.name for p in out.glob(".*.created")} == {f".{c}.created" for c in first}
    packed = _FakePacked()
    monkeypatch.setattr(runner_mod, "run_packed", packed)
    lines: list[str] = []
    result = run_sweep(_sweep_spec(), out, log=lines.append, pack=2)
    assert packed.calls == [first, ["ce-ir20-s1", "la-ir20-s1"]]
    assert result["missing"] == [] and sorted(result["ran"]) == sorted(
        [*first, "ce-ir20-s1", "la-ir20-s1"]
    )
    assert "sweep: --pack: ce-ir20-s0: removing its unfinished run (no checkpoint yet)" in lines
    assert len(list(out.glob(".*.created"))) == 4


def test_sweep_pack_leaves_a_run_it_did_not_make_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "run_training", FakeRunner())
    packed = _FakePacked()
    monkeypatch.setattr(runner_mod, "run_packed", packed)
    out = tmp_path / "sw"
    (out / "la-ir20-s0").mkdir(parents=True)
    (out / "la-ir20-s0" / "config.yaml").write_text("{}\n")
    with pytest.raises(UserError, match="holds an unfinished run this sweep did not make"):
        run_sweep(_sweep_spec(), out, log=None, pack=2)
    assert packed.calls == [] and (out / "la-ir20-s0" / "config.yaml").read_text() == "{}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pack", "0"], "--pack takes a number of runs >= 1, got 0"),
        (["--pack", "2", "--cell", "0"], "--pack trains several cells at once and --cell one"),
    ],
)
def test_sweep_pack_mistakes_get_one_line(tmp_path, capsys, extra, message):
    assert main(["sweep", "--out", str(tmp_path / "s"), *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_full_length_pack_trains_its_queue_packed_and_writes_records(tmp_path):
    """benchmarks/full_length.py --pack: the runs still to train go into one pack, each leaves
    its record naming the runs it was packed with (here two short digits runs stand in for the
    CIFAR grid)."""
    import argparse
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "full_length", root / "benchmarks" / "full_length.py"
    )
    full_length = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(full_length)
    digits = ["data.val=unused", "data.val_per_class=5", "eval.splits=[val,test]", "optim.epochs=1"]
    digits += ["optim.warmup_epochs=0", "optim.milestones=[]", "run.tensorboard=false"]
    todo = [("ce", None, ["loss.name=ce", "model.head=linear", *digits], 0)]
    todo += [("etf_dr", None, digits, 1)]
    args = argparse.Namespace(pack=2, threads=1, device="cpu", eval_batch=128)
    out, records = tmp_path / "runs", tmp_path / "records"
    assert full_length.train_packed(todo, args, out, records) == 0
    names = [full_length.run_name(m, s) for m, _, _, s in todo]
    for name in names:
        rec = json.loads((records / f"{name}.json").read_text())
        assert rec["packed_with"] == names and rec["val"]["acc"] >= 0
        assert (
            rec["command"].startswith("ncollapse train --config")
            and f"--name {name}" in rec["command"]
        )
    assert full_length.train_packed(todo, args, out, records) == 0  # finished: nothing to train


# ------------------------------------------------------------------ stopped by a signal


def _signal_at_pack_step(monkeypatch, n):
    """SIGTERM to this process right after the pack's ``n``-th step (1-based)."""
    original, count = PackedTrainer._step, [0]

    def step(self, live, steps):
        out = original(self, live, steps)
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(PackedTrainer, "_step", step)


def test_a_signal_inside_an_epoch_stops_the_pack_and_it_resumes_exactly(tmp_path, monkeypatch):
    """SIGTERM in the middle of a packed epoch: every run saves its checkpoint at that step
    (the run files following the umask, env.json naming the pack), the handlers come back, and
    the pack resumed together ends with the uninterrupted pack's weights and records, bit for
    bit; the records hold the class-balanced accuracy, as a run alone's do."""
    cells = [("ce", 0), ("etf_dr", 1)]
    full = run_packed([_cfg(tmp_path / "full", m, s) for m, s in cells])
    _signal_at_pack_step(monkeypatch, 10)  # 7 steps per epoch: step 3 of epoch 2
    old = os.umask(0o027)
    try:
        with pytest.raises(Preempted, match="in epoch 2 after step 3 of 7 \\(each run"):
            run_packed([_cfg(tmp_path / "cut", m, s) for m, s in cells])
    finally:
        os.umask(old)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    dirs = [tmp_path / "cut" / f"{m}-s{s}" for m, s in cells]
    for d in dirs:
        ckpt = torch.load(d / "checkpoint.pt", weights_only=False)
        assert (ckpt["epoch"], ckpt["position"]["step"], ckpt["position"]["steps"]) == (1, 3, 7)
        for name in ("checkpoint.pt", "config.yaml", "data.json", "env.json", "metrics.jsonl"):
            assert (d / name).stat().st_mode & 0o777 == 0o640, name
        assert json.loads((d / "env.json").read_text())["pack"] == [f"{m}-s{s}" for m, s in cells]
    logged = []
    resumed = run_packed([None, None], resumes=dirs, log=logged.append)
    assert logged == [] and all(isinstance(r, runner_mod.RunResult) for r in resumed)
    for a, b in zip(full, resumed):
        _same_run(a.run_dir, b.run_dir)
        evals = [r for r in b.run.metrics() if r["kind"] == "eval"]
        assert evals and all(0 <= r["bal_acc"] <= 1 for r in evals)
        assert "bal_acc" in json.loads((b.run_dir / "summary.json").read_text())["final"]


def test_a_signal_in_a_packed_evaluation_redoes_every_runs_evaluation(tmp_path, monkeypatch):
    """SIGTERM during the second run's evaluation, after the first run's records were written:
    both runs go back to the end of the epoch's steps (the pack resumes from one place), the
    first run's records of that epoch are cut on resume, and the result is the uninterrupted
    pack's."""
    cells = [("ce", 0), ("etf_dr", 1)]
    extra = ["eval.collapse_every=1"]
    full = run_packed([_cfg(tmp_path / "full", m, s, extra) for m, s in cells])
    original, calls = Trainer.collapse, [0]

    def collapse(self, epoch):  # the second run's collapse pass of epoch 1
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "collapse", collapse)
    with pytest.raises(Preempted, match="training steps of epoch 1 \\(its evaluation is redone"):
        run_packed([_cfg(tmp_path / "cut", m, s, extra) for m, s in cells])
    monkeypatch.undo()
    dirs = [tmp_path / "cut" / f"{m}-s{s}" for m, s in cells]
    first = [json.loads(line) for line in (dirs[0] / "metrics.jsonl").open()]
    assert {r["epoch"] for r in first} == {1}  # written before the stop
    for d in dirs:
        ckpt = torch.load(d / "checkpoint.pt", weights_only=False)
        assert ckpt["epoch"] == 0 and ckpt["position"]["record"]["epoch"] == 1
    resumed = run_packed([None, None], resumes=dirs)
    for a, b in zip(full, resumed):
        _same_run(a.run_dir, b.run_dir)


def test_sweep_pack_stopped_by_sigterm_says_how_to_go_on_and_resumes_packed(tmp_path, capsys):
    """``ncollapse sweep --pack 2`` sent SIGTERM mid-epoch: exit 143 with the command that goes
    on; rerun, the two cells resume together, packed, to the uninterrupted sweep's weights."""
    args = ["sweep", "--methods", "ce,etf_dr", "--seeds", "0", "--epochs", "2", "--pack", "2"]
    args += [x for s in QUIET for x in ("--set", s)]
    cells = ("ce-ir20-s0", "etf_dr-ir20-s0")
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    mp = pytest.MonkeyPatch()
    _signal_at_pack_step(mp, 9)
    try:
        assert main([*args, "--out", str(tmp_path / "cut")]) == 128 + signal.SIGTERM
    finally:
        mp.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped by SIGTERM: checkpoint saved in epoch 2 after step 2 of 7" in err
    assert "rerun `ncollapse sweep" in err and "to continue the sweep from there" in err
    assert main([*args, "--out", str(tmp_path / "cut")]) == 0
    err = capsys.readouterr().err
    assert f"sweep: packing 2 cells into one batched model: {', '.join(cells)}" in err
    for cell in cells:
        a = torch.load(tmp_path / "full" / cell / "model.pt")
        b = torch.load(tmp_path / "cut" / cell / "model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), cell
    assert os.path.isfile(tmp_path / "cut" / "results.csv")
