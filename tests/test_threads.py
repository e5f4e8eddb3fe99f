"""The CPU thread policy (ncollapse.threads): the wait policy, the free-cores count, the claims
of other ncollapse runs, and what a run is given."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ncollapse import threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_claims(tmp_path, monkeypatch):
    """Each test has its own claims folder and no OMP_NUM_THREADS."""
    monkeypatch.setattr(threads, "_claims_dir", lambda: tmp_path / "claims")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CLAIM", None)
    yield
    threads.release_claim()


def test_quiet_openmp_sets_passive_unless_a_policy_is_set():
    env: dict[str, str] = {}
    assert threads.quiet_openmp(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env = {var: "ACTIVE" if var == "OMP_WAIT_POLICY" else "1000"}
        assert threads.quiet_openmp(env) is False and "PASSIVE" not in env.values()


def test_usable_cores_and_busy_cores_are_sane():
    cores = threads.usable_cores()
    assert cores >= 1
    busy = threads.busy_cores(0.05)
    if busy is not None:  # Linux
        assert 0.0 <= busy <= cores


def test_requested_and_environment_win(monkeypatch):
    assert threads.choose_threads(3).threads == 3
    assert threads.choose_threads(3).reason == "set"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = threads.choose_threads()
    assert choice.reason == "environment" and "OMP_NUM_THREADS" in choice.describe()


@pytest.mark.parametrize(
    ("cores", "busy", "torch_default", "expected"),
    [
        (2, 0.0, 2, 2),  # an idle machine: every core, as torch would
        (2, 0.9, 2, 1),  # one core busy: the other one
        (2, 0.35, 2, 1),  # a core a third busy counts as busy
        (2, 0.2, 2, 2),  # light background load does not
        (2, 2.0, 2, 1),  # everything busy: still one thread
        (16, 3.0, 8, 8),  # never more than torch's own default
        (16, 3.0, 16, 13),
    ],
)
def test_free_cores(monkeypatch, cores, busy, torch_default, expected):
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0: busy)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", torch_default)
    choice = threads.choose_threads()
    assert (choice.threads, choice.reason) == (expected, "free cores")
    assert f"{cores} cores" in choice.describe()


def test_no_measurement_leaves_torch_default(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0: None)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 2)
    assert threads.choose_threads().reason == "no measurement"


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ncollapse import threads
    threads._claims_dir = lambda: Path(sys.argv[1])
    threads._claim(int(sys.argv[2]))
    print("claimed", flush=True)
    end = time.time() + float(sys.argv[3])
    while time.time() < end:  # busy, as a training run is
        pass
    """
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_threads_of_other_busy_runs_are_subtracted_and_released(monkeypatch, tmp_path):
    """A run that started first and holds 2 threads leaves one to the next run, even before its
    own load shows (the sampled load is 0 here); its claim goes when it ends."""
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0: time.sleep(0.3) or 0.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 2)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "claims"), "2", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    )
    try:
        assert child.stdout.readline().strip() == "claimed"
        choice = threads.choose_threads()
        assert (choice.threads, choice.claimed) == (1, 2)
        assert "held by other ncollapse runs" in choice.describe()
    finally:
        child.kill()
        child.wait()
    choice = threads.choose_threads()  # the child is gone: its claim is stale and removed
    assert (choice.threads, choice.claimed) == (2, 0)
    assert not (tmp_path / "claims" / f"{child.pid}.claim").exists()


def test_an_idle_claimant_does_not_count(monkeypatch, tmp_path):
    """A process that holds a claim but uses no CPU (an idle notebook that trained once) takes
    nothing from the next run."""
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0: 0.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = threads._start_time(sleeper.pid)
        claims = tmp_path / "claims"
        claims.mkdir()
        (claims / f"{sleeper.pid}.claim").write_text(f"{sleeper.pid} {start} 2\n")
        assert threads.choose_threads().threads == 2
    finally:
        sleeper.kill()
        sleeper.wait()


def test_own_claim_is_written_and_released(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0: 0.0)
    threads.choose_threads(2)
    claim = next((tmp_path / "claims").glob("*.claim"))
    assert claim.read_text().split()[2] == "2"
    threads.release_claim()
    assert not claim.exists()


def test_set_threads_gives_torch_the_choice():
    import torch

    before = torch.get_num_threads()
    try:
        choice = threads.set_threads(1)
        assert torch.get_num_threads() == 1 and choice.threads == 1
    finally:
        torch.set_num_threads(before)
