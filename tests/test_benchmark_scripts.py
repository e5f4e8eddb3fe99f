"""The benchmark scripts' own logic (their timings are not tested: benchmarks print ratios
measured in one run, on one machine)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name in sys.modules:  # loaded by another test module (tests/test_figures.py)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a script's dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_time_ratio_only_between_runs_on_the_same_kind_of_device():
    tta = _load("time_to_accuracy")
    official = [{"device": "cpu", "wall_seconds": 15_000.0}]
    fast = [{"device": "cpu", "wall_seconds": 900.0}, {"device": "cpu", "wall_seconds": 1100.0}]
    ratio, note = tta.time_ratio(official, fast)
    assert ratio == pytest.approx(15.0) and "15.0x" in note
    gpu = [{"device": "cuda", "wall_seconds": 44.0}]
    ratio, note = tta.time_ratio(official, gpu)
    assert ratio is None
    assert "cpu" in note and "cuda" in note and "--official" in note
    ratio, note = tta.time_ratio(official, [{"device": "cpu"}])
    assert ratio is None and "no wall time" in note


def test_trained_runs_are_read_back_with_the_machine_they_ran_on(tmp_path):
    """Without --runs the script trains, then reads each run back like a --runs directory: the
    machine printed is the one the run recorded (here this CPU), and a finished run is found
    again rather than retrained."""
    from argparse import Namespace

    from ncollapse.runner import cpu_info

    tta = _load("time_to_accuracy")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "name: tiny\nmethod: etf_dr\ndata: {name: digits, imbalance: 0.1}\n"
        "optim: {epochs: 1, warmup_epochs: 0, milestones: [], batch_size: 64}\n"
        "eval: {collapse_every: 0}\nrun: {tensorboard: false, amp: false}\n"
    )
    args = Namespace(out=str(tmp_path / "runs"), progress="none", threads=1, device=None)
    path = tta._train(str(recipe), 0, args, val=False)
    summary, name, machine = tta._finished(path)
    assert name == "tiny" and summary["epochs"] == 1
    assert machine == cpu_info()["model"]
    stamp = (Path(path) / "summary.json").stat().st_mtime_ns
    assert tta._train(str(recipe), 0, args, val=False) == path  # found, not retrained
    assert (Path(path) / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="not a finished run"):
        tta._finished(str(tmp_path))


def test_full_length_packs_an_unfinished_run_and_resumes_it_elsewhere(tmp_path, monkeypatch):
    """An unfinished run of the full-length grid travels as a pack: unpacked where its directory
    is missing, it resumes from its checkpoint to the weights of the uninterrupted run."""
    import torch

    import ncollapse

    fl = _load("full_length")
    over = ["optim.epochs=4", "run.threads=1", "run.tensorboard=false", "eval.collapse_every=0"]
    whole = ncollapse.train(overrides=over, out=tmp_path / "a", name="r", progress="none")
    from test_engine import cut_after_two_epochs

    part = tmp_path / "b" / "r"
    cut_after_two_epochs(
        monkeypatch, ncollapse.train, overrides=over, out=tmp_path / "b", name="r", progress="none"
    )
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2
    records = tmp_path / "records"
    assert fl.save_partial(whole.run_dir, records) is None  # finished: nothing to pack
    packed = fl.save_partial(part, records)
    assert packed == records / "partial" / "r.tar.gz"
    moved = tmp_path / "c" / "r"
    assert fl.restore_partial(moved, records)
    assert not fl.restore_partial(moved, records)  # never over an existing directory
    assert sorted(p.name for p in moved.iterdir()) == sorted(
        n for n in fl.PACKED if (part / n).is_file()
    )
    back = torch.load(moved / "checkpoint.pt", weights_only=False)
    assert back["epoch"] == ckpt["epoch"]
    resumed = ncollapse.train(resume=moved, progress="none")
    want = torch.load(whole.run_dir / "model.pt", weights_only=True)
    got = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_time_to_accuracy_reads_the_yardstick_the_docs_quote():
    """The official run's figures beside the fast recipe come from the fp32 record the docs'
    "official" group reads, not from the grid's seed 0, which full_length.py rewrites in the
    grid's own precision."""
    tta = _load("time_to_accuracy")
    figures = _load("figures")
    assert tta.OFFICIAL_RECORD.name == f"{figures.GROUPS['official']}.json"
    assert tta.OFFICIAL_RECORD.is_file()
    record = json.loads(tta.OFFICIAL_RECORD.read_text())
    stem = tta.OFFICIAL_RECORD.stem
    assert (record.get("precision") or figures.LEGACY_PRECISION.get(stem)) == "fp32"
