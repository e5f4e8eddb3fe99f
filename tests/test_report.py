"""ncollapse.report on a tiny fake run directory, and ``ncollapse analyze``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from ncollapse.errors import UserError
from ncollapse.geometry import simplex_etf
from ncollapse.metrics import CollapseAccumulator, collapse_metrics, long_tail_accuracy
from ncollapse.report import (
    analyze_features,
    analyze_runs,
    load_collapse_state,
    read_run,
    save_collapse_state,
)

COUNTS = [300, 120, 60, 30, 12, 5]


def make_run(root, name, head="etf", loss="dr", epochs=3, seed=0):
    """A run directory as docs/architecture.md describes, with made-up but valid numbers."""
    run = root / name
    run.mkdir(parents=True)
    k, d = len(COUNTS), 8
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {"name": name, "data": {}, "model": {"head": head}, "loss": {"name": loss}, "optim": {}}
        )
    )
    (run / "data.json").write_text(
        json.dumps(
            {
                "classes": [str(i) for i in range(k)],
                "class_counts": {"train": COUNTS, "test": [10] * k},
            }
        )
    )
    rng = np.random.default_rng(seed)
    frame = simplex_etf(d, k, seed=seed, dtype=torch.float64).T.numpy()
    y = np.concatenate([np.full(c, i) for i, c in enumerate(COUNTS)])
    yt = np.repeat(np.arange(k), 10)
    lines = []
    acc = None
    for epoch in range(1, epochs + 1):
        noise = 1.0 / epoch
        x = frame[y] + noise * rng.normal(size=(len(y), d))
        xt = frame[yt] + 1.5 * noise * rng.normal(size=(len(yt), d))
        lines.append(
            {
                "kind": "train",
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "lr": 0.1,
                "seconds": 1.0,
                "images_per_s": 100.0,
            }
        )
        preds = (xt @ frame.T).argmax(1)
        lines.append(
            {
                "kind": "eval",
                "epoch": epoch,
                "split": "test",
                **long_tail_accuracy(preds, yt, COUNTS),
            }
        )
        for split, (f, lab) in (("train", (x, y)), ("test", (xt, yt))):
            m = collapse_metrics(f, lab, classifier=frame, tail_classes=[4, 5])
            lines.append({"kind": "collapse", "epoch": epoch, "split": split, **m})
        acc = CollapseAccumulator(k, d)
        acc.update(x, y)
    with open(run / "metrics.jsonl", "w") as fh:
        for rec in lines:
            fh.write(json.dumps(rec) + "\n")
    (run / "summary.json").write_text(json.dumps({"epoch": epochs}))
    save_collapse_state(run, acc, classifier=frame)
    return run


def test_collapse_state_round_trip(tmp_path):
    acc = CollapseAccumulator(3, 4)
    x = np.arange(24, dtype=float).reshape(6, 4)
    acc.update(x, [0, 0, 1, 1, 2, 2])
    path = save_collapse_state(tmp_path, acc, classifier=np.eye(3, 4))
    assert path.name == "collapse_final.npz"
    st = load_collapse_state(tmp_path)
    assert st["class_means"].shape == (3, 4)
    assert st["class_counts"].tolist() == [2, 2, 2]
    assert np.allclose(st["global_mean"], x.mean(0))
    assert np.allclose(st["classifier"], np.eye(3, 4))
    save_collapse_state(tmp_path / "x.npz", class_means=np.ones((2, 3)), class_counts=[1, 0])
    assert "classifier" not in load_collapse_state(tmp_path / "x.npz")


def test_analyze_single_run_writes_plots_and_summary(tmp_path):
    run = make_run(tmp_path, "etf_dr")
    r = read_run(run)
    assert r.method == "etf+dr" and r.train_counts() == COUNTS
    out = analyze_runs([run])
    names = sorted(p.split("/")[-1] for p in out["files"])
    assert names == ["analysis.md", "collapse_curves.png", "cosine_matrices.png", "per_class.png"]
    for f in out["files"]:
        assert (run / f.split("/")[-1]).stat().st_size > 0
    md = (run / "analysis.md").read_text()
    assert "etf_dr" in md and "nc1" in md
    assert out["runs"][0]["collapse_train"]["epoch"] == 3


def test_analyze_overlay_two_runs(tmp_path):
    a = make_run(tmp_path, "etf_dr")
    b = make_run(tmp_path, "linear_ce", head="linear", loss="ce", seed=1)
    out = analyze_runs([a, b], tmp_path / "cmp")
    assert [r["method"] for r in out["runs"]] == ["etf+dr", "linear+ce"]
    assert (tmp_path / "cmp" / "collapse_curves.png").is_file()
    md = (tmp_path / "cmp" / "analysis.md").read_text()
    assert "linear_ce" in md and "etf_dr" in md


def test_bad_run_dirs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no metrics\.jsonl"):
        read_run(tmp_path / "empty")


def test_analyze_features_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [20, 10, 5, 3])
    x = rng.normal(size=(len(y), 5))
    w = rng.normal(size=(4, 5))
    np.savez(tmp_path / "f.npz", features=x, labels=y, classifier=w)
    res = analyze_features(tmp_path / "f.npz", tmp_path / "out")
    assert res["metrics"]["nc1"] == pytest.approx(collapse_metrics(x, y, classifier=w)["nc1"])
    assert (tmp_path / "out" / "features_cosine.png").is_file()
    np.savez(tmp_path / "g.npz", feats=x, labels=y)
    with pytest.raises(UserError, match="missing array 'features'"):
        analyze_features(tmp_path / "g.npz", tmp_path / "out")
    np.savez(tmp_path / "h.npz", features=x, labels=y[:-1])
    with pytest.raises(UserError, match="'labels'"):
        analyze_features(tmp_path / "h.npz", tmp_path / "out")
    np.savez(tmp_path / "i.npz", features=x, labels=y, classifier=w[:, :3])
    with pytest.raises(UserError, match="'classifier'"):
        analyze_features(tmp_path / "i.npz", tmp_path / "out")
