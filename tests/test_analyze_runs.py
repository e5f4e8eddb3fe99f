"""``ncollapse analyze`` on what users have: an unfinished run is called unfinished (with the
command that goes on, not advice to retrain), classes are labelled by name, and every panel
drawn has something in it."""

import os
import signal

import pytest

import ncollapse
from ncollapse.engine.loop import Trainer
from ncollapse.report import analyze_runs, plots
from test_own_data import COUNTS, make_folder


@pytest.fixture
def figures(monkeypatch):
    """The figures analyze draws, by file name."""
    drawn = {}
    save = plots._save

    def keep(fig, path):
        drawn[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _panels_filled(fig):
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.lines or ax.collections or ax.images, ax.get_title()


def test_an_unfinished_run_is_said_to_be_unfinished(tmp_path, figures):
    original, calls = Trainer._step, [0]

    def step(self, s):
        out = original(self, s)
        calls[0] += 1
        if calls[0] == 20:  # in epoch 3 or 4 of 8: collapse (every 5 epochs) not measured yet
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    with pytest.MonkeyPatch.context() as mp, pytest.raises(ncollapse.Preempted):
        mp.setattr(Trainer, "_step", step)
        ncollapse.train(epochs=8, out=tmp_path, name="half", progress="none", threads=1)
    run_dir = tmp_path / "half"
    done = max(r["epoch"] for r in ncollapse.Run(run_dir).metrics())
    assert 1 <= done < 5
    with pytest.warns(UserWarning, match=f"half has not finished: epoch {done} of 8 so far"):
        result = analyze_runs([run_dir])
    (note,) = result["notes"]
    assert "not measured yet (every 5 epochs and at the end)" in note
    assert f"ncollapse train --resume {run_dir}" in note and "--set" not in note
    assert f"{done} (unfinished: {done} of 8)" in (run_dir / "analysis.md").read_text()
    # no collapse record yet: per_class.png has the accuracy panel alone, and it is filled
    assert [ax.get_title() for ax in figures["per_class.png"].axes] == ["per-class accuracy"]
    _panels_filled(figures["per_class.png"])
    assert "collapse_curves.png" not in figures  # nothing to draw: no empty panels


def test_classes_are_labelled_by_name_and_panels_filled(tmp_path, figures):
    root = make_folder(tmp_path / "mine")
    res = ncollapse.train(
        overrides=["data.name=imagefolder", f"data.root={root}", "eval.collapse_every=1"],
        epochs=2,
        out=tmp_path / "runs",
        name="mine",
        progress="none",
        threads=1,
    )
    result = analyze_runs([res.run_dir])
    assert result["notes"] == []
    cos = figures["cosine_matrices.png"]
    by_size = sorted(COUNTS, key=lambda c: -COUNTS[c])
    for ax in cos.axes:
        if ax.get_label() != "<colorbar>":
            assert [t.get_text() for t in ax.get_xticklabels()] == by_size
            assert [t.get_text() for t in ax.get_yticklabels()] == by_size
    for name in ("cosine_matrices.png", "per_class.png", "collapse_curves.png"):
        _panels_filled(figures[name])
    assert len(figures["per_class.png"].axes) == 2 and len(figures["collapse_curves.png"].axes) == 4
    text = (res.run_dir / "analysis.md").read_text()
    assert "bal_acc" in text and "unfinished" not in text
