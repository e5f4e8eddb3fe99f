"""The one-line progress display (ncollapse.engine.progress)."""

from __future__ import annotations

import io

from ncollapse.engine import progress as progress_mod
from ncollapse.engine.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_counts_whole_epochs_not_only_their_training(monkeypatch):
    """With a test set measured every epoch, an epoch of 40 s training takes 75 s in all: the
    ETA goes by the 75 s the clock saw, and the line shows both."""
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    out = io.StringIO()
    p = Progress(10, "log", stream=out)
    p.start()
    for epoch in range(2):
        clock.now += 75.0  # 40 s of training, 35 s of evaluation
        p.epoch(epoch, 40.0, "loss 1.0")
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("epoch 2/10 loss 1.0 ")
    assert "(40.0s training, 75.0s in all, ETA 10:00)" in line  # 8 epochs x 75 s


def test_without_a_start_the_first_epoch_counts_its_training_time(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    out = io.StringIO()
    p = Progress(3, "log", stream=out)
    p.epoch(0, 20.0, "x")
    assert "(20.0s training, 20.0s in all, ETA 00:40)" in out.getvalue()


def test_an_epoch_resumed_midway_is_never_shorter_than_its_training(monkeypatch):
    """Resumed in the middle of an epoch, the training time recorded includes the part before
    the stop: the epoch in all is at least that long."""
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    out = io.StringIO()
    p = Progress(2, "log", stream=out)
    p.start()
    clock.now += 10.0  # the second half of the epoch, then its evaluation
    p.epoch(0, 25.0, "x")
    assert "(25.0s training, 25.0s in all, ETA 00:25)" in out.getvalue()


def test_quiet_mode_prints_nothing():
    out = io.StringIO()
    p = Progress(3, "none", stream=out)
    p.start()
    p.epoch(0, 2.0, "x")
    p.message("hello")
    assert out.getvalue() == ""
