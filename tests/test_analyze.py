"""``ncollapse analyze`` through ``ncollapse.cli.main``."""

from __future__ import annotations

import json

import numpy as np

from ncollapse.cli import main
from test_report import make_run


def test_cli_analyze_run_json(tmp_path, capsys):
    run = make_run(tmp_path, "etf_dr", epochs=2)
    assert main(["analyze", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runs"]["runs"][0]["name"] == "etf_dr"
    assert (run / "analysis.md").is_file()


def test_cli_analyze_two_runs_and_features(tmp_path, capsys):
    a = make_run(tmp_path, "a", epochs=1)
    b = make_run(tmp_path, "b", head="linear", loss="ce", epochs=1, seed=2)
    y = np.repeat(np.arange(3), 5)
    np.savez(tmp_path / "f.npz", features=np.random.default_rng(0).normal(size=(15, 4)), labels=y)
    out = tmp_path / "o"
    assert (
        main(["analyze", str(a), str(b), "--out", str(out), "--features", str(tmp_path / "f.npz")])
        == 0
    )
    assert (out / "analysis.md").is_file() and (out / "features_metrics.json").is_file()
    assert "wrote to" in capsys.readouterr().out


def test_cli_analyze_errors(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["analyze", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", labels=np.zeros(3))
    assert main(["analyze", "--features", str(tmp_path / "bad.npz")]) == 2
    assert "'features'" in capsys.readouterr().err
    assert main(["analyze"]) == 2
