"""Preemption: SIGTERM / SIGUSR1 save a checkpoint at the next step boundary, ``--resume``
continues from that step to the weights of the uninterrupted run (inside an epoch and during
the end-of-epoch evaluation), the command line says how to go on and exits 128 + the signal,
TensorBoard keeps one series per tag, and run files follow the umask."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncollapse.composition import compose
from ncollapse.engine.loop import Trainer
from ncollapse.engine.tensorboard import read_scalars
from ncollapse.errors import Preempted
from ncollapse.rundir import read_metrics
from ncollapse.runner import run_training

SRC = Path(__file__).resolve().parents[1] / "src"


def _cfg(out, name, **over):
    sets = [
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=none",
        "run.threads=1",
        "optim.epochs=3",
        "optim.milestones=[2]",
        "optim.warmup_epochs=1",
        "optim.batch_size=32",
        "optim.mixup_alpha=1.0",
        "data.augment=standard",
        "eval.collapse_every=1",
    ]
    sets += [f"{k}={v}" for k, v in over.items()]
    return compose(overrides=sets)


def _same_run(a: Path, b: Path) -> None:
    """The final weights, every metrics record but the times, and the summary's results."""
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ca = torch.load(a / "checkpoint.pt", weights_only=False)
    cb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert "position" not in cb  # the last checkpoint is an epoch-boundary one again

    def strip(rs):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]

    ma, mb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert strip(ma) == strip(mb)


def _signal_at_step(monkeypatch, n: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process right after the ``n``-th training step (1-based)."""
    original, count = Trainer._step, [0]

    def step(self, s):
        out = original(self, s)
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(Trainer, "_step", step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_inside_an_epoch_then_resume_is_the_uninterrupted_run(tmp_path, monkeypatch, signum):
    full = run_training(_cfg(tmp_path, "full"))
    steps = 19  # inside the second epoch (digits-LT: 12 steps of 32 images per epoch)
    _signal_at_step(monkeypatch, steps, signum)
    with pytest.raises(Preempted) as info:
        run_training(_cfg(tmp_path, "cut"))
    monkeypatch.undo()
    run_dir = tmp_path / "cut"
    assert info.value.exit_status == 128 + signum
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    per_epoch = ckpt["position"]["steps"]
    assert ckpt["epoch"] == steps // per_epoch  # epochs completed
    assert ckpt["position"]["step"] == steps % per_epoch  # inside the next epoch
    assert 0 < ckpt["position"]["step"] < per_epoch
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are restored

    run_training(resume=run_dir)
    _same_run(full.run_dir, run_dir)
    # env.json says where the resume picked up: after this step of the next epoch
    (start,) = json.loads((run_dir / "env.json").read_text())["resumes"]
    assert start["after_epoch"] == steps // per_epoch
    assert (start["step"], start["steps"]) == (steps % per_epoch, per_epoch)


def test_signal_during_the_evaluation_then_resume_is_the_uninterrupted_run(tmp_path, monkeypatch):
    full = run_training(_cfg(tmp_path, "full"))
    original, calls = Trainer.collapse, [0]

    def collapse(self, epoch):  # after the test accuracy, inside the collapse passes
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "collapse", collapse)
    with pytest.raises(Preempted, match="evaluation is redone"):
        run_training(_cfg(tmp_path, "cut"))
    monkeypatch.undo()
    run_dir = tmp_path / "cut"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["position"]["step"] == ckpt["position"]["steps"]
    assert max(r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl")) == 1  # nothing of 2

    run_training(resume=run_dir)
    _same_run(full.run_dir, run_dir)
    # TensorBoard: one event file, each tag one point per epoch, none replayed
    files = list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1
    points = [(t, s) for t, s, _ in read_scalars(files[0]) if "/" in t]
    assert len(points) == len(set(points))
    assert sorted(s for t, s in points if t == "eval_test/acc") == [1, 2, 3]


def test_a_signal_after_the_records_stops_at_the_epoch_boundary(tmp_path, monkeypatch):
    original = Trainer.train_epoch

    def train_epoch(self, epoch):
        record = original(self, epoch)
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # after the steps: stop in the evaluation
            self.epoch_logged = 1  # as if the records were written already
        return record

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    with pytest.raises(Preempted, match="after epoch 1"):
        run_training(_cfg(tmp_path, "b"))
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and "position" not in ckpt


@pytest.mark.slow
def test_sigterm_from_outside_prints_how_to_resume_and_exits_143(tmp_path):
    """A real ``kill -TERM`` of ``ncollapse train`` in the middle of its training, then
    ``--resume``: the message, the exit status, the files' modes under umask 027."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "ncollapse", "train", "--out", str(tmp_path), "--name", "r"]
    cmd += ["--epochs", "400", "--set", "run.threads=1", "--set", "run.progress=log"]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(0o027),
    )
    for line in proc.stderr:  # wait for training to be under way
        if line.startswith("epoch 3/"):
            break
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ncollapse: stopped by SIGTERM: checkpoint saved"), err
    assert f"ncollapse train --resume {tmp_path / 'r'}" in last and "Traceback" not in err
    run = tmp_path / "r"
    for name in ("checkpoint.pt", "config.yaml", "data.json", "metrics.jsonl"):
        assert (run / name).stat().st_mode & 0o777 == 0o640, name
    assert (run / "checkpoint.pt").stat().st_mode & 0o777 == 0o640


def test_a_streamed_run_resumes_inside_an_epoch_exactly(tmp_path, monkeypatch):
    """List-file data: the resume loads only the steps left and replays their mixup draws."""
    from test_streaming import write_jpegs

    lists = write_jpegs(tmp_path, train=(12, 8, 6))
    sets = [f"{k}={v}" for k, v in lists.items()]
    sets += ["data.name=listfile", f"data.root={tmp_path}", "data.size=16", "data.workers=0"]
    sets += ["optim.batch_size=4", "optim.mixup_alpha=1.0", "optim.epochs=2", "eval.batch_size=8"]
    sets += ["optim.warmup_epochs=0", "optim.milestones=[]", "run.threads=1", "run.progress=none"]

    def cfg(name):
        return compose(
            method="etf_dr", overrides=[*sets, f"run.out_dir={tmp_path}", f"run.name={name}"]
        )

    full = run_training(cfg("full"))
    _signal_at_step(monkeypatch, 9)  # 7 steps per epoch: step 2 of epoch 2
    with pytest.raises(Preempted):
        run_training(cfg("cut"))
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["position"]["step"], ckpt["position"]["steps"]) == (1, 2, 7)
    run_training(resume=tmp_path / "cut")
    _same_run(full.run_dir, tmp_path / "cut")
