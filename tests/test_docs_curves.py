"""Collapse curves that are curves: the default measures several times per run (the documented
``eval.collapse_every``), and ``ncollapse analyze`` says when a run measured only once."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

QUIET = {"run": {"progress": "none", "tensorboard": False, "threads": 1}}


def test_default_measures_collapse_several_times_per_run():
    from ncollapse import compose

    cfg = compose()  # what `ncollapse train` runs with no recipe
    assert 0 < cfg.eval.collapse_every < cfg.optim.epochs
    assert cfg.optim.epochs // cfg.eval.collapse_every >= 3


def _train(tmp_path, name, every):
    import ncollapse

    overrides = {**QUIET, "eval": {"collapse_every": every, "collapse_splits": ["train"]}}
    return ncollapse.train(epochs=4, out=tmp_path, name=name, overrides=overrides)


@pytest.mark.slow
def test_analyze_says_when_a_run_measured_only_once(tmp_path):
    from ncollapse.report import analyze_runs

    once = _train(tmp_path, "once", 0)
    curve = _train(tmp_path, "curve", 2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = analyze_runs([once.run_dir])
    assert len(result["notes"]) == 1 and "only at epoch 4" in result["notes"][0]
    assert "eval.collapse_every" in result["notes"][0]
    assert any("only at epoch 4" in str(w.message) for w in caught)
    assert "measured only at epoch 4" in (once.run_dir / "analysis.md").read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run with a curve draws no note
        result = analyze_runs([curve.run_dir])
    assert result["notes"] == []

    proc = subprocess.run(  # as a user sees it (pytest would capture the warning in-process)
        [sys.executable, "-m", "ncollapse", "analyze", str(once.run_dir), str(curve.run_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "ncollapse: warning: once: neural collapse was measured only at epoch 4" in proc.stderr
