"""SIGKILL in the middle of a sweep cell, then the same command again, gives what an
uninterrupted sweep gives (issue 13): the same results.md (but for the timings) and bit-identical
final weights of every run. A real ``ncollapse sweep`` process is killed; no hook in the code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
CELLS = ("ce-ir20-s0", "etf_dr-ir20-s0")


def _sweep(out: Path) -> list[str]:
    return [sys.executable, "-m", "ncollapse", "sweep", "--methods", "ce,etf_dr", "--ratio", "20",
            "--seeds", "0", "--epochs", "8", "--out", str(out), "--set", "run.progress=log",
            "--set", "run.tensorboard=false", "--set", "run.threads=1"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}


def _without_timings(md: str) -> list[str]:
    """results.md without the wall-time line and the two timing columns (train s, wall s)."""
    out = []
    for line in md.splitlines():
        if line.startswith("- wall time"):
            continue
        if line.startswith("|"):
            line = "|".join(line.split("|")[:-3])
        out.append(line)
    return out


@pytest.mark.slow
def test_sigkill_mid_cell_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_sweep(full), env=_env(), cwd=tmp_path, check=True, capture_output=True)

    proc = subprocess.Popen(
        _sweep(cut), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    second = cut / CELLS[1]
    deadline = time.monotonic() + 300
    try:
        while not (second / "checkpoint.pt").is_file():  # the second cell is under way
            assert proc.poll() is None, "the sweep finished before it could be killed"
            assert time.monotonic() < deadline, "the second cell never wrote a checkpoint"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (cut / CELLS[0] / "summary.json").is_file()  # the first cell had finished
    assert not (second / "summary.json").is_file()  # the second had not

    again = subprocess.run(
        _sweep(cut), env=_env(), cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert f"{CELLS[0]}: finished earlier, skipped" in again.stderr
    assert f"{CELLS[1]}: resuming from its checkpoint" in again.stderr
    assert _without_timings((cut / "results.md").read_text()) == _without_timings(
        (full / "results.md").read_text()
    )
    for cell in CELLS:
        a = torch.load(full / cell / "model.pt", map_location="cpu")
        b = torch.load(cut / cell / "model.pt", map_location="cpu")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), cell
