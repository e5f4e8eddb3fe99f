"""Cross-entropy vs dot-regression under the fixed ETF (Yang et al., 2022, Theorem 2), and the
approach of the mean predictions to a simplex ETF as the sample size grows (Hong & Ling, 2023).

The convergence tests compare the measured rates with predictions derived independently here
(the linearisation of the projected step at the optimum), so they fail if a loss gradient, the
ETF or the projection is wrong, whichever loss comes out ahead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncollapse.ufm import converge, convergence_rate, sample_size_sweep, sphere_gradient_descent

K = 10
BALANCED = [100] * K


def _ce_factors(step: float, rho: float, k: int = K, scale: float = 1.0) -> tuple[float, float]:
    """Predicted asymptotic NC3 factor per iteration of projected CE descent on unit features,
    W = unit simplex ETF times ``scale``, class weight ``rho`` = n_k / N.

    At the vertex h* = w_k the softmax gives p on class k and q on every other class; the
    gradient there is radial, -rho s (1 - p) K/(K-1) w_k, so normalising after the step divides
    a tangent perturbation by 1 + c, c = step rho s (1-p) K/(K-1). Along the directions in the
    ETF's span the CE Hessian adds rho s^2 q K/(K-1); directions outside the span (d >= K) have
    none. NC3 is quadratic in the perturbation: the factors are squared.
    """
    e_k, e_j = math.exp(scale), math.exp(-scale / (k - 1))
    z = e_k + (k - 1) * e_j
    p, q = e_k / z, e_j / z
    c = step * rho * scale * (1 - p) * k / (k - 1)
    span = ((1 - step * rho * scale**2 * q * k / (k - 1)) / (1 + c)) ** 2
    outside = (1 / (1 + c)) ** 2
    return span, outside


@pytest.mark.parametrize("step", [1.0, 3.0])
def test_ce_converges_linearly_at_the_predicted_factor(step):
    span, outside = _ce_factors(step, 1 / K)
    # d = K - 1: the tangent space lies in the ETF's span
    tr = sphere_gradient_descent(BALANCED, K - 1, "ce", step, nc3_tol=0, max_iter=120, trace=True)
    f = np.array(tr["trace"])
    assert f[100] / f[99] == pytest.approx(span, rel=1e-3)
    # d = K: one direction outside the span, slower, dominates in the end
    tr = sphere_gradient_descent(BALANCED, K, "ce", step, nc3_tol=0, max_iter=400, trace=True)
    f = np.array(tr["trace"])
    t = int(np.nonzero(f > 1e-25)[0][-1])
    assert f[t] / f[t - 1] == pytest.approx(outside, rel=2e-3)
    assert outside > span


@pytest.mark.parametrize("step", [1.0, 10.0])
def test_dr_converges_sublinearly_like_one_over_t(step):
    # the DR gradient (cos - 1) w_k vanishes quadratically at the vertex, so the angle obeys
    # theta' ~ theta - step rho theta^3 / 2, theta^2 ~ 1/(step rho t), NC3 ~ (1/K) sum theta^2
    tr = sphere_gradient_descent(BALANCED, K, "dr", step, nc3_tol=0, max_iter=4000, trace=True)
    f = np.array(tr["trace"])
    slope = math.log(f[4000] / f[1000]) / math.log(4)
    assert slope == pytest.approx(-1.0, abs=0.02)
    assert 0.85 * K / step < f[4000] * 4000 < 1.0 * K / step
    assert convergence_rate(f) > 0.999  # no linear rate


@pytest.mark.parametrize("ratio", [1.0, 100.0])
def test_same_step_comparison_goes_both_ways(ratio):
    r = converge(K, ratio, steps=[1.0, 10.0, 1e4], nc3_tol=1e-3, max_iter=3000)
    fewer = [run["fewer_iterations"] for run in r["runs"]]
    # CE ahead at ordinary steps (linear vs sublinear), DR ahead at a huge step (its update is a
    # convex combination of h and the vertex, it cannot overshoot)
    assert fewer == ["ce", "ce", "dr"]
    big = r["runs"][2]
    assert big["dr"]["iterations"] == 1 < big["ce"]["iterations"]
    assert r["runs"][0]["ce"]["rate"] < 0.995 and r["runs"][1]["ce"]["rate"] < 0.95


def test_best_step_protocol_is_kept_and_favours_dr():
    r = converge(10, 1.0, protocol="best-step", max_iter=2000)
    assert r["dr"]["iterations"] == 1 and r["ce"]["iterations"] >= 1


# ---------------------------------------------------------------------------------------------
# Hong & Ling (2023), (d): more samples at a fixed imbalance ratio -> mean predictions -> ETF


@pytest.mark.parametrize(("ratio", "constant"), [(10.0, 1.23), (100.0, 2.85)])
def test_mean_predictions_approach_the_etf_as_n_grows(ratio, constant):
    nbs = [10**e for e in range(1, 7)]
    res = sample_size_sweep(ratio, nbs, lam=1.0, scaling="sum")
    rows = res["rows"]
    assert all(row["converged"] for row in rows)
    dist = np.array([row["etf_distance"] for row in rows])
    assert (np.diff(dist) < 0).all(), dist  # strictly decreasing
    assert dist[-1] < 0.55 * dist[0]
    # the distance falls like c / log(1/mu), mu = lam sqrt(n_B) (the only way n enters): the
    # product stays put while mu falls by 2.5 decades, so the distance tends to 0
    prod = dist * np.log(1 / np.array([row["mu"] for row in rows]))
    assert np.abs(prod / constant - 1).max() < 0.1, prod
    tail = [row["minority_collapse_logits"] for row in rows]
    assert (np.diff(tail) < 0).all()


def test_balanced_mean_predictions_are_the_etf_and_fixed_lam_collapses():
    balanced = sample_size_sweep(1.0, [10, 1000], lam=1.0)["rows"]
    assert all(row["etf_distance"] < 1e-6 for row in balanced)
    # a fixed lam of the mean loss instead crosses sqrt(n_B)/N as n grows: minority collapse
    fixed = sample_size_sweep(10.0, [10, 1000], lam=3e-3, scaling="mean")["rows"]
    assert (
        fixed[0]["minority_collapse_logits"] < 0.5 and fixed[1]["minority_collapse_logits"] == 1.0
    )
