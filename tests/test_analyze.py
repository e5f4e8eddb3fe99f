"""``ncollapse analyze`` through ``ncollapse.cli.main``: runs, features files, bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ncollapse.cli import main
from test_report import make_run


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _features(tmp_path, name="f.npz", n_per=(20, 10, 5, 3), d=4, **extra):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(n_per)), n_per)
    x = rng.normal(size=(len(y), d)) + 3 * np.eye(len(n_per), d)[y]
    arrays = {"features": x, "labels": y, **extra}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path, x, y


def test_cli_analyze_run_json(tmp_path, capsys):
    run = make_run(tmp_path, "etf_dr", epochs=2)
    rc, out, _ = _run(["analyze", str(run), "--json"], capsys)
    res = json.loads(out)
    assert rc == 0 and res["runs"]["runs"][0]["name"] == "etf_dr"
    assert (run / "analysis.md").is_file()


def test_cli_analyze_two_runs_and_features(tmp_path, capsys):
    a = make_run(tmp_path, "a", epochs=1)
    b = make_run(tmp_path, "b", head="linear", loss="ce", epochs=1, seed=2)
    path, _, _ = _features(tmp_path)
    out = tmp_path / "o"
    rc, text, _ = _run(["analyze", str(a), str(b), "--out", str(out), "--features", str(path)],
                       capsys)  # fmt: skip
    assert rc == 0 and "wrote to" in text
    assert (out / "analysis.md").is_file() and (out / "features_metrics.json").is_file()
    # without --out the features results go with the comparison, not into RUN_DIR itself
    rc, _, _ = _run(["analyze", str(a), str(b), "--features", str(path)], capsys)
    assert rc == 0 and (a / "compare_b" / "features_metrics.json").is_file()


def test_cli_features_alone_default_out_and_help(tmp_path, capsys):
    path, _, _ = _features(tmp_path)
    rc, out, _ = _run(["analyze", "--features", str(path), "--json"], capsys)
    assert rc == 0 and json.loads(out)["features"]["out_dir"] == str(tmp_path)
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "with --features and no RUN_DIR, the folder holding FILE.npz" in help_text


def test_cli_features_tail_from_flags(tmp_path, capsys):
    # balanced "test" features: without help the default tail is the label counts' smallest
    # third, [2, 3]; the training set's tail is what the indices should use
    path, _, _ = _features(tmp_path, n_per=(30, 30, 30, 30, 30, 30))
    rc, out, _ = _run(["analyze", "--features", str(path), "--json"], capsys)
    assert json.loads(out)["features"]["metrics"]["tail_classes"] == [4, 5]
    rc, out, _ = _run(["analyze", "--features", str(path), "--tail", "3,4,5", "--json"], capsys)
    assert rc == 0 and json.loads(out)["features"]["metrics"]["tail_classes"] == [3, 4, 5]
    rc, out, _ = _run(["analyze", "--features", str(path), "--train-counts",
                       "5,300,100,40,15,500", "--json"], capsys)  # fmt: skip
    assert rc == 0 and json.loads(out)["features"]["metrics"]["tail_classes"] == [0, 4]


def _bad_files(tmp_path):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 4)
    x = rng.normal(size=(12, 3))
    cases = {}
    nan = x.copy()
    nan[5, 1] = np.nan
    np.savez(tmp_path / "nan.npz", features=nan, labels=y)
    cases["nan"] = ("nan.npz", "NaN or inf")
    inf = x.copy()
    inf[2, 0] = np.inf
    np.savez(tmp_path / "inf.npz", features=inf, labels=y)
    cases["inf"] = ("inf.npz", "NaN or inf")
    obj = np.empty(12, dtype=object)
    obj[:] = [list(r) for r in x]
    np.savez(tmp_path / "obj.npz", features=obj, labels=y)
    cases["object"] = ("obj.npz", "Python objects")
    np.save(tmp_path / "plain.npy", x)
    cases["npy"] = ("plain.npy", "single NumPy array (.npy)")
    huge = y.copy()
    huge[3] = 10**9
    np.savez(tmp_path / "huge.npz", features=x, labels=huge)
    cases["label 1e9"] = ("huge.npz", "np.unique(labels, return_inverse=True)")
    (tmp_path / "text.npz").write_text("features,labels\n1,2\n")
    cases["not a zip"] = ("text.npz", "not an .npz archive")
    np.savez(tmp_path / "full.npz", features=x, labels=y)
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    cases["truncated"] = ("cut.npz", "not a readable .npz")
    np.savez(tmp_path / "cplx.npz", features=x.astype(np.complex64), labels=y)
    cases["complex"] = ("cplx.npz", "real numbers")
    np.savez(tmp_path / "neg.npz", features=x, labels=y - 1)
    cases["negative"] = ("neg.npz", "negative")
    np.savez(tmp_path / "one.npz", features=x, labels=np.zeros(12, dtype=int))
    cases["one class"] = ("one.npz", "at least two classes")
    np.savez(tmp_path / "nolabels.npz", features=x)
    cases["missing"] = ("nolabels.npz", "missing array 'labels'")
    return cases


def test_cli_bad_features_files_are_one_line(tmp_path, capsys):
    for what, (name, needle) in _bad_files(tmp_path).items():
        t0 = time.perf_counter()
        rc, _, err = _run(["analyze", "--features", str(tmp_path / name)], capsys)
        assert rc == 2, what
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (what, err)
        assert needle in err, (what, err)
        assert time.perf_counter() - t0 < 5, what  # no giant allocation first


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--tail", "7,8"], "tail classes must be class indices"),
        (["--tail", "a,b"], "--tail"),
        (["--train-counts", "5,3"], "training class counts"),
        (["--tail", "1", "--train-counts", "5,3,1,1"], "not both"),
    ],
)
def test_cli_bad_tail_options(tmp_path, capsys, extra, needle):
    path, _, _ = _features(tmp_path)
    rc, _, err = _run(["analyze", "--features", str(path), *extra], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_cli_analyze_errors(tmp_path, capsys):
    rc, _, err = _run(["analyze", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    rc, _, err = _run(["analyze", str(tmp_path)], capsys)
    assert rc == 2 and "metrics.jsonl" in err
    np.savez(tmp_path / "bad.npz", labels=np.zeros(3))
    rc, _, err = _run(["analyze", "--features", str(tmp_path / "bad.npz")], capsys)
    assert rc == 2 and "'features'" in err
    rc, _, err = _run(["analyze", str(tmp_path), "--tail", "1,2"], capsys)
    assert rc == 2 and "apply to --features" in err
    assert _run(["analyze"], capsys)[0] == 2
