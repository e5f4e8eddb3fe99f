"""Unconstrained feature model: the four SPEC section 7 facts, solver cross-checks, CLI, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ncollapse.cli import main
from ncollapse.errors import UserError
from ncollapse.ufm import (
    converge,
    long_tail_profile,
    minority_collapse_state,
    parse_counts,
    solve,
    theoretical_threshold,
    threshold,
)

# ---------------------------------------------------------------------------------------------
# fact 1: fixed ETF, imbalance 100 -> NC3 ~ 0 and no minority collapse


@pytest.mark.parametrize("loss", ["ce", "dr"])
@pytest.mark.parametrize("counts", ["500x5,5x5", long_tail_profile(10, 100)])
def test_fixed_etf_collapses_to_vertices_under_imbalance(loss, counts):
    sol = solve(counts, loss=loss, classifier="etf", lam_h=5e-4)
    m = sol.metrics
    assert sol.converged
    assert m["nc3"] < 1e-3
    assert m["minority_collapse_means"] < 0.01
    assert m["minority_collapse_w"] < 0.01


# ---------------------------------------------------------------------------------------------
# fact 2: minority-collapse threshold sqrt(n_B)/N, learnable CE


@pytest.mark.parametrize(("ka", "kb", "expected"), [(5, 5, 0.00333), (3, 7, 0.00455)])
@pytest.mark.parametrize("bias", [False, True])
def test_threshold_matches_theory(ka, kb, expected, bias):
    r = threshold(ka, 500, kb, 100, bias=bias)
    theory = theoretical_threshold(ka, 500, kb, 100)
    assert theory == pytest.approx(expected, rel=2e-3)
    assert abs(r["measured"] / theory - 1) < 0.05
    assert r["above"]["spread"] < 1e-9 < 1e-4 < r["below"]["spread"]


@pytest.mark.parametrize(("ka", "kb"), [(5, 5), (3, 7)])
def test_minority_separated_below_and_coincide_above(ka, kb):
    counts = [500] * ka + [100] * kb
    tail = list(range(ka, ka + kb))
    thr = theoretical_threshold(ka, 500, kb, 100)
    below = minority_collapse_state(counts, 0.9 * thr, tail)
    above = minority_collapse_state(counts, 1.1 * thr, tail)
    assert below["spread"] > 0.05 and below["minority_collapse_means"] < 0.5
    assert above["spread"] < 1e-9 and above["minority_collapse_means"] > 0.999


@pytest.mark.slow  # factored L-BFGS: 1-5 s each on a loaded 2-core machine
@pytest.mark.parametrize("factor", [0.5, 2.0])
@pytest.mark.parametrize("bias", [False, True])
def test_factored_and_convex_forms_agree_away_from_threshold(factor, bias):
    counts = [500] * 5 + [100] * 5
    lam = factor * theoretical_threshold(5, 500, 5, 100)
    lam_w, lam_h = lam / 4, lam  # 2 sqrt(lam_W lam_H) = lam, deliberately unbalanced
    fac = solve(counts, lam_w=lam_w, lam_h=lam_h, bias=bias, method="factored")
    cvx = solve(counts, lam_w=lam_w, lam_h=lam_h, bias=bias, method="convex")
    assert fac.converged and cvx.converged
    assert fac.objective == pytest.approx(cvx.objective, rel=1e-9)
    assert np.abs(fac.Z - cvx.Z).max() < 1e-5
    collapsed = factor > 1
    assert (fac.metrics["minority_spread"] < 1e-6) == collapsed
    assert (cvx.metrics["minority_spread"] < 1e-6) == collapsed


def test_per_sample_problem_matches_per_class_reduction():
    kw = {"lam_w": 0.01, "lam_h": 0.01, "bias": True}
    a = solve("3,2,1", method="factored", **kw)
    b = solve("3,2,1", per_sample=True, **kw)
    assert a.converged and b.converged
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    assert np.abs(a.Z - b.Z).max() < 1e-5
    # and every sample of a class ends on the same feature
    for c in range(3):
        cols = b.H[:, b.labels == c]
        assert np.abs(cols - cols[:, :1]).max() < 1e-5


# ---------------------------------------------------------------------------------------------
# fact 3: DR reaches the NC3 tolerance in fewer iterations than CE under the fixed ETF


@pytest.mark.parametrize("imbalance", [1.0, 100.0])
def test_dr_needs_fewer_iterations_than_ce(imbalance):
    r = converge(10, imbalance, nc3_tol=1e-3)
    assert r["dr"]["iterations"] is not None and r["ce"]["iterations"] is not None
    assert r["dr"]["iterations"] < r["ce"]["iterations"]
    assert r["ratio_ce_over_dr"] > 1


@pytest.mark.parametrize("imbalance", [1.0, 100.0])
def test_dr_fewer_iterations_k100_tight_tolerance(imbalance):
    # at K = 100 and NC3 < 1e-3 both reach the tolerance in one projected step (a tie); at
    # 1e-6 CE needs 2 and DR still 1
    r = converge(100, imbalance, nc3_tol=1e-6, max_iter=200)
    assert r["dr"]["iterations"] < r["ce"]["iterations"]


# ---------------------------------------------------------------------------------------------
# fact 4: balanced classes, learnable CE -> simplex ETF


def _etf_error(rows: np.ndarray) -> float:
    k = rows.shape[0]
    c = rows - rows.mean(axis=0)
    u = c / np.linalg.norm(c, axis=1, keepdims=True)
    target = (1 + 1 / (k - 1)) * np.eye(k) - np.ones((k, k)) / (k - 1)
    return float(np.abs(u @ u.T - target).max())


@pytest.mark.parametrize("method", ["factored", "convex"])
def test_balanced_learnable_ce_reaches_simplex_etf(method):
    sol = solve("100x10", lam_w=5e-4, lam_h=5e-4, method=method)
    assert sol.converged
    assert sol.metrics["nc3"] < 1e-6
    assert _etf_error(sol.W) < 1e-4
    assert _etf_error(sol.class_features) < 1e-4
    norms = np.linalg.norm(sol.W, axis=1)
    assert norms.std() / norms.mean() < 1e-4


@pytest.mark.slow
def test_k100_solves_take_seconds():
    import time

    for kw in ({}, {"bias": True}, {"classifier": "etf"}, {"classifier": "etf", "loss": "dr"}):
        t0 = time.perf_counter()
        sol = solve("500x50,5x50", **kw)
        assert sol.converged and time.perf_counter() - t0 < 30, kw
        assert sol.metrics["logit_norm"] > 0  # the default lam does not collapse everything


# ---------------------------------------------------------------------------------------------
# input checking


@pytest.mark.parametrize("text", ["abc", "0x5", "500x0", "5.5,3", "-1,3", "500x5,", "7"])
def test_bad_counts(text):
    with pytest.raises(UserError, match="positive integers|at least 2"):
        parse_counts(text)


def test_parse_counts_forms():
    assert parse_counts("500x2,100x3") == [500, 500, 100, 100, 100]
    assert parse_counts("3,2,1") == [3, 2, 1]


def test_bad_inputs_raise_user_errors():
    with pytest.raises(UserError, match="dim >= K-1"):
        solve("10x10", classifier="etf", dim=5)
    with pytest.raises(UserError, match="non-negative"):
        solve("10x3", lam_w=-1.0)
    with pytest.raises(UserError, match="n_B < n_A"):
        threshold(5, 100, 5, 100)
    with pytest.raises(UserError, match="classifier etf"):
        solve("10x3", loss="dr")


def test_cli_threshold_json(capsys):
    assert main(["ufm", "threshold", "--ka", "5", "--kb", "5", "--na", "500", "--nb", "100",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["theory"] == pytest.approx(math.sqrt(100) / 3000)
    assert abs(out["measured"] / out["theory"] - 1) < 0.05


def test_cli_solve_json(capsys):
    assert main(["ufm", "solve", "--counts", "50x2,5x2", "--classifier", "etf", "--loss", "dr",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["converged"] and out["metrics"]["nc3"] < 1e-3
    assert out["settings"]["feature_norm"] == 1.0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["solve", "--counts", "5x0"], "positive integers"),
        (["solve", "--counts", "5x4", "--classifier", "etf", "--dim", "2"], "dim >= K-1"),
        (["solve", "--counts", "5x4", "--lam-h", "-1"], "non-negative"),
        (["threshold", "--ka", "5", "--kb", "5", "--na", "100", "--nb", "200"], "n_B < n_A"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, needle):
    assert main(["ufm", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_cli_converge_and_phase(tmp_path, capsys):
    assert main(["ufm", "converge", "--k", "4", "--imbalance", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dr"]["iterations"] is not None
    png = tmp_path / "phase.png"
    assert main(["ufm", "phase", "--ratios", "2,5", "--lams", "1e-3:1e-2:4", "--out",
                 str(png), "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 1000
    # theory boundary sqrt(n_B)/N: collapsed above, not below (ratio 2: N = 1500, lam* = 0.00667)
    row = res["minority_collapse_means"][0]
    assert row[0] < 0.5 and row[-1] > 0.999
