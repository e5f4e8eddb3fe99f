"""Unconstrained feature model: the fixed-ETF and threshold facts, solver cross-checks, the
phase diagram's degenerate and unsettled cells, input checking of the library."""

from __future__ import annotations

import numpy as np
import pytest

from ncollapse.errors import UserError
from ncollapse.ufm import (
    long_tail_profile,
    minority_collapse_state,
    parse_counts,
    phase_diagram,
    solve,
    theoretical_threshold,
    threshold,
)

# ---------------------------------------------------------------------------------------------
# Yang et al. (2022), Theorem 1: fixed ETF, imbalance ratio 100 -> NC3 ~ 0, no minority collapse


@pytest.mark.parametrize("loss", ["ce", "dr"])
@pytest.mark.parametrize("counts", ["500x5,5x5", long_tail_profile(10, 100)])
def test_fixed_etf_collapses_to_vertices_under_imbalance(loss, counts):
    sol = solve(counts, loss=loss, classifier="etf", lam_h=5e-4)
    m = sol.metrics
    assert sol.converged
    assert m["nc3"] < 1e-3
    assert m["minority_collapse_means"] < 0.01
    assert m["minority_collapse_w"] < 0.01


def test_long_tail_profile_is_the_package_profile():
    from ncollapse.data.longtail import long_tail_counts

    # int() rounding as in the CIFAR-LT subsets: 299, not round()'s 300
    assert long_tail_profile(10, 100) == long_tail_counts(500, 10, 0.01)
    assert long_tail_profile(10, 100)[:3] == [500, 299, 179]
    with pytest.raises(UserError, match="ratio must be a number >= 1"):
        long_tail_profile(10, 0.01)


# ---------------------------------------------------------------------------------------------
# Fang et al. (2021), Hong & Ling (2023): minority collapse exactly when lam >= sqrt(n_B)/N


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
    # every sample of a class ends on the same feature, and the metrics agree
    for c in range(3):
        cols = b.H[:, b.labels == c]
        assert np.abs(cols - cols[:, :1]).max() < 1e-5
    for key in ("nc3", "nc2_etf_error", "w_etf_error", "nc4"):
        assert a.metrics[key] == pytest.approx(b.metrics[key], abs=1e-5), key


def test_metrics_come_from_the_package_kernels():
    from ncollapse.metrics import collapse_metrics

    sol = solve("50x3,10x3", tail=[3, 4, 5])
    feats = np.repeat(sol.class_features, sol.counts, axis=0)
    labels = np.repeat(np.arange(6), sol.counts)
    ref = collapse_metrics(feats, labels, classifier=sol.W, tail_classes=[3, 4, 5])
    for key in ("nc3", "nc4", "nc2_etf_error", "w_etf_error", "minority_collapse_w",
                "minority_collapse_means"):  # fmt: skip
        assert sol.metrics[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    assert sol.metrics["tail_classes"] == [3, 4, 5]
    # a wide feature space changes nothing (the metrics are computed in the span)
    wide = solve("50x3,10x3", tail=[3, 4, 5], dim=60)
    assert wide.metrics["nc3"] == pytest.approx(sol.metrics["nc3"], rel=1e-6)


# ---------------------------------------------------------------------------------------------
# balanced data, learnable CE -> simplex ETF (Papyan, Han & Donoho 2020; the UFM proofs)


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


def test_k100_solves_take_seconds():
    import time

    for kw in ({}, {"bias": True}, {"classifier": "etf"}, {"classifier": "etf", "loss": "dr"}):
        t0 = time.perf_counter()
        sol = solve("500x50,5x50", **kw)
        assert sol.converged and time.perf_counter() - t0 < 30, kw
        assert sol.metrics["logit_norm"] > 0  # the default lam does not collapse everything


# ---------------------------------------------------------------------------------------------
# phase diagram: the formerly isolated cell, and cells the solver did not settle


def test_phase_cell_with_vanishing_tail_features_reads_collapsed():
    # the default grid's cell n_A/n_B ~ 31.5, lam ~ 2.47e-3 (row 14, column 18): the tail
    # features are ~1e-9 (noise of the factorisation), the centred-means cosines are noise;
    # it used to show -0.07 inside the collapsed region
    ratios = np.geomspace(1.25, 50, 17)[13:16]
    lams = np.geomspace(1e-4, 3e-2, 33)[17:20]
    res = phase_diagram(ratios=ratios, lams=lams)
    index = np.array(res["minority_collapse_means"], dtype=float)
    spread = np.array(res["minority_spread"], dtype=float)
    assert spread[1, 1] < 1e-9
    assert index[1, 1] == 1.0
    assert (index[spread < 1e-6] == 1.0).all()
    assert res["unsettled"] == []


def test_phase_unsettled_cells_have_no_value(tmp_path):
    png = tmp_path / "p.png"
    res = phase_diagram(ratios=[2, 5], lams=[1e-3, 3e-2], max_iter=2, out=png)
    unsettled = {tuple(c) for c in res["unsettled"]}
    assert unsettled, "two iterations cannot settle the cells below the threshold"
    for i, r in enumerate(res["ratios"]):
        for j, lam in enumerate(res["lams"]):
            cell = res["minority_collapse_means"][i][j]
            assert (cell is None) == ((r, lam) in unsettled) == (not res["converged"][i][j])
    assert png.stat().st_size > 1000


def test_minority_collapse_state_reports_unsettled_solves():
    st = minority_collapse_state([500] * 5 + [100] * 5, 1e-3, range(5, 10), max_iter=2)
    assert not st["converged"] and st["minority_collapse_means"] is None and st["spread"] is None


# ---------------------------------------------------------------------------------------------
# input checking (library)


@pytest.mark.parametrize("text", ["abc", "0x5", "500x0", "5.5,3", "-1,3", "500x5,", "7"])
def test_bad_counts(text):
    with pytest.raises(UserError, match="positive integers|at least 2"):
        parse_counts(text)


def test_parse_counts_forms_and_size_limit():
    assert parse_counts("500x2,100x3") == [500, 500, 100, 100, 100]
    assert parse_counts("3,2,1") == [3, 2, 1]
    with pytest.raises(UserError, match="at most K = 200"):
        parse_counts("5x100000000")  # refused before a list of 1e8 counts is built


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"counts": "10x10", "classifier": "etf", "dim": 5}, "dim >= K-1"),
        ({"counts": "10x3", "lam_w": -1.0}, "non-negative"),
        ({"counts": "10x3", "loss": "dr"}, "classifier etf"),
        ({"counts": "10x3", "classifier": "etf", "etf_scale": 0}, "etf_scale"),
        ({"counts": "10x3", "tol": 0}, "tol"),
        ({"counts": "10x3", "seed": -1}, "seed"),
        ({"counts": "10x3", "dim": 10**6}, "limit"),
        ({"counts": "5x150", "dim": 4000}, "variables"),
        ({"counts": "100000x3", "per_sample": True}, "per-sample"),
        ({"counts": "10x3", "tail": [7]}, "tail classes"),
        ({"counts": "10x3", "feature_norm": float("nan")}, "feature_norm"),
    ],
)
def test_bad_solve_arguments_raise_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        solve(kwargs.pop("counts"), **kwargs)


def test_bad_threshold_arguments():
    with pytest.raises(UserError, match="n_B < n_A"):
        threshold(5, 100, 5, 100)
    with pytest.raises(UserError, match="rel_tol"):
        threshold(5, 500, 5, 100, rel_tol=0)
    with pytest.raises(UserError, match="rel_tol must be >= 1e-12"):
        threshold(5, 500, 5, 100, rel_tol=1e-20)
