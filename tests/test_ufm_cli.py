"""``ncollapse ufm ...``: results, one-line errors for every bad option, help texts."""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest

from ncollapse.cli import build_parser, main


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_threshold_json(capsys):
    rc, out, _ = _run(["ufm", "threshold", "--ka", "5", "--kb", "5", "--na", "500", "--nb", "100",
                       "--json"], capsys)  # fmt: skip
    res = json.loads(out)
    assert rc == 0
    assert res["theory"] == pytest.approx(math.sqrt(100) / 3000)
    assert abs(res["measured"] / res["theory"] - 1) < 0.05


def test_cli_solve_json(capsys):
    rc, out, _ = _run(["ufm", "solve", "--counts", "50x2,5x2", "--classifier", "etf", "--loss",
                       "dr", "--tail", "2,3", "--json"], capsys)  # fmt: skip
    res = json.loads(out)
    assert rc == 0 and res["converged"] and res["metrics"]["nc3"] < 1e-3
    assert res["settings"]["feature_norm"] == 1.0
    assert res["metrics"]["tail_classes"] == [2, 3]


def test_cli_converge_same_step_and_best_step(capsys):
    rc, out, _ = _run(["ufm", "converge", "--k", "4", "--ratio", "1", "10", "--steps", "1,1e4",
                       "--max-iter", "500", "--json"], capsys)  # fmt: skip
    rows = json.loads(out)
    assert rc == 0 and [r["ratio"] for r in rows] == [1.0, 10.0]
    assert all(len(r["runs"]) == 2 and r["protocol"] == "same-step" for r in rows)
    rc, out, _ = _run(["ufm", "converge", "--k", "4", "--ratio", "1", "--protocol", "best-step",
                       "--max-iter", "500"], capsys)  # fmt: skip
    assert rc == 0 and "best step" in out


def test_cli_phase_and_samples(tmp_path, capsys):
    png = tmp_path / "phase.png"
    rc, out, _ = _run(["ufm", "phase", "--ratios", "2,5", "--lams", "1e-3:1e-2:4", "--out",
                       str(png), "--json"], capsys)  # fmt: skip
    res = json.loads(out)
    assert rc == 0 and png.stat().st_size > 1000
    # theory boundary sqrt(n_B)/N: collapsed above, not below (ratio 2: N = 1500, lam* = 0.00667)
    row = res["minority_collapse_means"][0]
    assert row[0] < 0.5 and row[-1] > 0.999 and res["unsettled"] == []
    rc, out, _ = _run(["ufm", "samples", "--ratio", "10", "--nb", "10,1000"], capsys)
    assert rc == 0 and "ETF dist" in out


BAD = [
    (
        ["threshold", "--ka", "5", "--kb", "5", "--na", "500", "--nb", "100", "--rel-tol", "0"],
        "--rel-tol",
    ),
    (
        ["threshold", "--ka", "5", "--kb", "5", "--na", "500", "--nb", "100", "--rel-tol", "1e-30"],
        "1e-12",
    ),
    (["threshold", "--ka", "5", "--kb", "5", "--na", "100", "--nb", "200"], "n_B < n_A"),
    (["threshold", "--ka", "5", "--kb", "1", "--na", "500", "--nb", "100"], "K_B >= 2"),
    (["threshold", "--ka", "x", "--kb", "5", "--na", "500", "--nb", "100"], "--ka"),
    (["phase", "--ratios", "2:10:1000000"], "limit is 200"),
    (["phase", "--ratios", "2:10:150", "--lams", "1e-3:1e-2:150"], "limit 10000"),
    (["phase", "--ratios", "0.5,2"], "> 1"),
    (["phase", "--lams", "abc"], "--lams"),
    (["phase", "--lams", "nan"], "finite"),
    (["phase", "--ka", "1000"], "at most 200"),
    (["phase", "--kb", "1"], "K_B >= 2"),
    (["phase", "--max-iter", "0"], "--max-iter"),
    (["solve", "--counts", "100x500,10x500"], "at most K = 200"),
    (["solve", "--counts", "5x100000000"], "at most K = 200"),
    (["solve", "--counts", "5x0"], "positive integers"),
    (["solve", "--counts", "5x4", "--classifier", "etf", "--dim", "2"], "dim >= K-1"),
    (["solve", "--counts", "5x4", "--lam-h", "-1"], "--lam-h"),
    (["solve", "--counts", "5x3", "--dim", "100000000"], "limit"),
    (["solve", "--counts", "5x150", "--dim", "4000"], "variables"),
    (["solve", "--counts", "5x3", "--classifier", "etf", "--etf-scale", "0"], "--etf-scale"),
    (["solve", "--counts", "5x3", "--feature-norm", "inf"], "--feature-norm"),
    (["solve", "--counts", "5x3", "--tol", "0"], "--tol"),
    (["solve", "--counts", "5x3", "--seed", "-1"], "seed"),
    (["solve", "--counts", "5x3", "--tail", "7"], "tail classes"),
    (["solve", "--counts", "5x3", "--tail", "a"], "--tail"),
    (["solve", "--counts", "100000x3", "--per-sample"], "per-sample"),
    (["solve", "--counts", "5x3", "--loss", "dr"], "classifier etf"),
    (["solve", "--counts", "5x3", "--method", "convex", "--dim", "2"], "dim >= K"),
    (["converge", "--steps", "abc"], "--steps"),
    (["converge", "--steps", "0,1"], "step size"),
    (["converge", "--imbalance", "1", "100"], "--ratio"),
    (["converge", "--ratio", "0.01"], "ratio must be a number >= 1"),
    (["converge", "--ratio", "1000"], "smallest class empty"),
    (["converge", "--k", "1"], ">= 2"),
    (["converge", "--k", "500"], "limit"),
    (["converge", "--k", "10", "--dim", "3"], "dim >= K-1"),
    (["converge", "--nc3-tol", "0"], "--nc3-tol"),
    (["converge", "--max-iter", "100000000"], "limit"),
    (["samples", "--nb", "1.5"], "--nb"),
    (["samples", "--ratio", "0.5"], "ratio"),
    (["bogus"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_cli_errors_are_one_line_before_any_work(capsys, argv, needle):
    t0 = time.perf_counter()
    rc, _, err = _run(["ufm", *argv], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and needle in err, err
    assert time.perf_counter() - t0 < 5  # refused up front, not after a long solve


def test_cli_converge_checks_every_combination_first(capsys, monkeypatch):
    import ncollapse.ufm.rates as rates

    monkeypatch.setattr(rates, "converge", lambda *a, **k: pytest.fail("ran before checking"))
    rc, _, err = _run(["ufm", "converge", "--k", "4", "300", "--ratio", "1"], capsys)
    assert rc == 2 and "limit" in err


def _ufm_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    ufm = top.choices["ufm"]
    sub = next(a for a in ufm._actions if isinstance(a, argparse._SubParsersAction))
    return {"ufm": ufm, **sub.choices}


def test_every_command_and_option_is_described():
    parsers = _ufm_parsers()
    assert set(parsers) == {"ufm", "solve", "threshold", "converge", "phase", "samples"}
    for name, p in parsers.items():
        assert p.description and p.description.endswith("."), name
        assert "SPEC" not in p.description and "DESIGN" not in p.description
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"ufm {name} {action.option_strings}: no help"
            assert "SPEC" not in action.help


def test_phase_help_names_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["ufm", "phase", "--help"])
    out = capsys.readouterr().out
    for line in out.splitlines():
        if line.strip().startswith(("--ka", "--kb", "--nb", "--bias")):
            assert len(line.split()) > 2, line  # an option and its help, not a bare flag


def test_cli_phase_streams_progress_on_large_grids(tmp_path, capsys, monkeypatch):
    import ncollapse.ufm.phase as phase

    fake = {"converged": True, "spread": 0.5, "minority_collapse_means": 0.1,
            "minority_collapse_w": 0.1}  # fmt: skip
    monkeypatch.setattr(phase, "minority_collapse_state", lambda *a, **k: fake)
    rc, _, err = _run(["ufm", "phase", "--ratios", "2:10:40", "--lams", "1e-3:1e-2:30",
                       "--out", str(tmp_path / "p.png")], capsys)  # fmt: skip
    lines = err.strip().splitlines()
    assert rc == 0 and len(lines) == 40 and lines[-1].endswith("1200/1200 cells")
    rc, _, err = _run(["ufm", "phase", "--ratios", "2,3", "--lams", "1e-3,1e-2",
                       "--out", str(tmp_path / "q.png")], capsys)  # fmt: skip
    assert rc == 0 and err == ""  # small grids stay quiet
