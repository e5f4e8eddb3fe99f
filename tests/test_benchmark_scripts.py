"""The benchmark scripts' own logic (their timings are not tested: benchmarks print ratios
measured in one run, on one machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
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
