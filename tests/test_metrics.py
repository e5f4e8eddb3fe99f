"""Known-answer tests for ncollapse.metrics: neural-collapse kernels, accumulator, accuracy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ncollapse.geometry import simplex_etf
from ncollapse.metrics import (
    CollapseAccumulator,
    collapse_metrics,
    default_tail_classes,
    etf_error,
    long_tail_accuracy,
    measure_collapse,
    minority_collapse_index,
    nc3_distance,
    vector_geometry,
)

COUNTS = [200, 120, 80, 50, 30, 20, 12, 8, 5, 3]  # imbalanced, K = 10, few-shot: 6..9
ZERO_KEYS = [
    "nc1",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf_error",
    "w_equinorm",
    "w_equiangular",
    "w_maxangle",
    "w_etf_error",
    "nc3",
    "nc4",
    "minority_collapse_means",
    "minority_collapse_w",
]


def _labels(counts):
    return torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])


def _noisy(counts, d=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    k = len(counts)
    centres = rng.normal(size=(k, d)) * 3
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    x = centres[y] + noise * rng.normal(size=(len(y), d)) + 5.0  # offset: tests the centring
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def test_etf_known_answer_is_zero_under_imbalance():
    d, k = 16, len(COUNTS)
    frame = simplex_etf(d, k, seed=3, dtype=torch.float64)  # (d, K)
    y = _labels(COUNTS)
    h = 2.5 * frame.T[y]
    out = collapse_metrics(h, y, classifier=frame.T)
    for key in ZERO_KEYS:
        assert abs(out[key]) < 1e-6, (key, out[key])
    assert out["class_counts"] == COUNTS
    assert out["missing_classes"] == []
    assert out["tail_classes"] == [6, 7, 8, 9]
    assert np.allclose(out["mean_norms"], 2.5)
    assert np.allclose(out["w_norms"], 1.0)


def test_coinciding_tail_vectors_give_minority_index_one():
    d, k = 16, len(COUNTS)
    frame = simplex_etf(d, k, seed=1, dtype=torch.float64)
    vecs = frame.T.clone()
    tail = [6, 7, 8, 9]
    vecs[tail] = vecs[tail].mean(0) + 0.3 * vecs[0]  # all tail vectors identical (non-zero)
    w = vecs.clone()
    y = _labels(COUNTS)
    out = collapse_metrics(vecs[y], y, classifier=w, tail_classes=tail)
    assert out["minority_collapse_w"] == pytest.approx(1.0, abs=1e-9)
    # the class means' tail vectors coincide too, also after centring on mu_bar
    assert out["minority_collapse_means"] == pytest.approx(1.0, abs=1e-9)


def test_nc1_matches_numpy_reference():
    x, y = _noisy(COUNTS, d=12, seed=4)
    k = len(COUNTS)
    # reference, straight from the definitions (Papyan, Han & Donoho 2020)
    mus = np.stack([x[y == c].mean(0) for c in range(k)])
    mu_bar = mus.mean(0)
    sw = np.zeros((x.shape[1], x.shape[1]))
    for c in range(k):
        z = x[y == c] - mus[c]
        sw += z.T @ z
    sw /= len(y)
    mc = mus - mu_bar
    sb = mc.T @ mc / k
    nc1_ref = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / k
    s2 = np.array([((x[y == c] - mus[c]) ** 2).sum(1).mean() for c in range(k)])
    cdnv_ref = np.mean(
        [
            (s2[a] + s2[b]) / (2 * ((mus[a] - mus[b]) ** 2).sum())
            for a in range(k)
            for b in range(k)
            if a != b
        ]
    )
    out = collapse_metrics(x, y)
    assert out["nc1"] == pytest.approx(nc1_ref, rel=1e-8)
    assert out["cdnv"] == pytest.approx(cdnv_ref, rel=1e-10)
    norms = np.linalg.norm(mc, axis=1)
    assert out["mean_norms"] == pytest.approx(list(norms), rel=1e-10)
    assert out["nc2_equinorm"] == pytest.approx(norms.std() / norms.mean(), rel=1e-10)


def test_nc2_nc3_invariant_to_rotation_and_scaling():
    x, y = _noisy(COUNTS, d=12, seed=5)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(len(COUNTS), 12))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    a = collapse_metrics(x, y, classifier=w)
    b = collapse_metrics(3.7 * x @ q.T, y, classifier=0.2 * w @ q.T)
    for key in ["nc1", "cdnv", "nc3", "nc4", "minority_collapse_means", "minority_collapse_w"]:
        assert b[key] == pytest.approx(a[key], rel=1e-8, abs=1e-12), key
    for key in [k for k in a if k.startswith(("nc2_", "w_e", "w_m"))]:
        assert b[key] == pytest.approx(a[key], rel=1e-8, abs=1e-12), key


def _compare(a, b, rel=1e-6):
    assert set(a) == set(b)
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, list):
            assert len(va) == len(vb)
            for p, q in zip(va, vb):
                if p is None or q is None:
                    assert p is q, key
                else:
                    assert q == pytest.approx(p, rel=rel, abs=1e-12), key
        elif isinstance(va, float):
            assert vb == pytest.approx(va, rel=rel, abs=1e-12), key
        else:
            assert va == vb, key


def test_accumulator_matches_in_memory_uneven_batches():
    x, y = _noisy(COUNTS, d=16, seed=2)
    x = x.astype(np.float32)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(len(COUNTS), 16))
    bias = rng.normal(size=len(COUNTS))
    ref = collapse_metrics(x, y, classifier=w, bias=bias)
    cuts = [0, 1, 7, 64, 65, 200, 333, len(y)]
    acc = CollapseAccumulator(len(COUNTS), 16)
    for s, e in itertools.pairwise(cuts):
        acc.update(torch.from_numpy(x[s:e]), torch.from_numpy(y[s:e]))
    for s, e in itertools.pairwise(cuts):
        acc.update_nc4(x[s:e], y[s:e], x[s:e].astype(np.float64) @ w.T + bias)
    _compare(ref, acc.compute(classifier=w))

    def factory():  # features, labels (logits from the classifier)
        for s, e in itertools.pairwise(cuts):
            yield torch.from_numpy(x[s:e]), torch.from_numpy(y[s:e])

    _compare(ref, measure_collapse(factory, len(COUNTS), 16, classifier=w, bias=bias))

    def with_logits():  # features, labels, logits
        for s, e in itertools.pairwise(cuts):
            yield x[s:e], y[s:e], x[s:e].astype(np.float64) @ w.T + bias

    _compare(ref, measure_collapse(with_logits, len(COUNTS), 16, classifier=w))

    def former_order():  # (features, logits, labels): still read, with a warning
        for s, e in itertools.pairwise(cuts):
            yield x[s:e], None, y[s:e]

    with pytest.warns(DeprecationWarning, match="features, labels, logits"):
        _compare(ref, measure_collapse(former_order, len(COUNTS), 16, classifier=w, bias=bias))


def test_accumulator_numerically_stable_with_large_offset():
    x, y = _noisy(COUNTS, d=8, noise=1e-3, seed=3)
    x = x + 1e6
    ref = collapse_metrics(x, y)
    acc = CollapseAccumulator(len(COUNTS), 8)
    for s in range(0, len(y), 37):
        acc.update(x[s : s + 37], y[s : s + 37])
    got = acc.compute()
    assert got["nc1"] == pytest.approx(ref["nc1"], rel=1e-6)
    assert got["cdnv"] == pytest.approx(ref["cdnv"], rel=1e-6)


def test_missing_class_is_excluded_and_reported():
    counts = [30, 20, 0, 10, 5]
    x, y = _noisy(counts, d=6, seed=1)
    w = np.random.default_rng(1).normal(size=(5, 6))
    out = collapse_metrics(x, y, classifier=w, num_classes=5)
    assert out["missing_classes"] == [2]
    assert out["mean_norms"][2] is None
    assert out["class_counts"] == counts
    present = y != 2
    kept = collapse_metrics(x[present], np.searchsorted([0, 1, 3, 4], y[present]))
    assert out["nc1"] == pytest.approx(kept["nc1"], rel=1e-10)


def test_default_tail_classes():
    assert default_tail_classes(COUNTS) == [6, 7, 8, 9]
    assert default_tail_classes([500] * 4 + [300] * 3 + [200] * 3) == [7, 8, 9]
    assert default_tail_classes([100, 100, 100]) == [1, 2]


def test_long_tail_accuracy_hand_example():
    counts = [500, 150, 101, 100, 60, 20, 19, 10, 5, 1]
    labels = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9])
    preds = np.array([0, 1, 1, 2, 3, 0, 4, 0, 6, 6, 1, 8, 9, 0])
    out = long_tail_accuracy(torch.from_numpy(preds), torch.from_numpy(labels), counts)
    assert out["acc"] == pytest.approx(9 / 14)
    per = [0.5, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5]
    assert out["per_class"] == pytest.approx(per)
    assert out["many"] == pytest.approx((0.5 + 1 + 1) / 3)  # counts > 100: 0, 1, 2
    assert out["medium"] == pytest.approx((0.5 + 1 + 0) / 3)  # 100, 60, 20
    assert out["few"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)  # 19, 10, 5, 1
    assert out["many_idx"] == pytest.approx((0.5 + 1 + 1) / 3)  # [0, 3)
    assert out["medium_idx"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)  # [3, 7)
    assert out["few_idx"] == pytest.approx((0 + 1 + 0.5) / 3)  # [7, 10)
    custom = long_tail_accuracy(preds, labels, counts, class_index_groups=[[0], [1], [9]])
    assert custom["few_idx"] == pytest.approx(0.5)


def test_long_tail_accuracy_empty_group_and_k100():
    out = long_tail_accuracy([0, 1], [0, 1], [50, 30])
    assert out["many"] is None and out["few"] is None
    assert out["medium"] == 1.0
    from ncollapse.metrics import index_groups

    many, medium, few = index_groups(100)
    assert (many[-1], medium[0], medium[-1], few[0]) == (35, 36, 70, 71)


def test_accumulator_memory_independent_of_n():
    k, d = 5, 7
    acc = CollapseAccumulator(k, d)
    rng = np.random.default_rng(0)
    for _ in range(20):
        acc.update(rng.normal(size=(50, d)), rng.integers(0, k, size=50))
    held = sum(v.numel() for v in vars(acc).values() if isinstance(v, torch.Tensor))
    assert held == k + k * d + k + d * d  # counts, means, per-class sums of squares, scatter


def test_update_nc4_keyword_and_positional_logits():
    x, y = _noisy(COUNTS, d=8, seed=6)
    w = np.random.default_rng(2).normal(size=(len(COUNTS), 8))
    a, b = CollapseAccumulator(len(COUNTS), 8), CollapseAccumulator(len(COUNTS), 8)
    for acc in (a, b):
        acc.update(x, y)
    a.update_nc4(x, y, logits=x @ w.T)  # how the engine calls it
    b.update_nc4(x, y, x @ w.T)
    assert a.compute(classifier=w)["nc4"] == b.compute(classifier=w)["nc4"]
    with pytest.raises(ValueError, match="logits must be"):
        a.update_nc4(x, y, logits=(x @ w.T)[:5])


# ---------------------------------------------------------------------------------------------
# kernels: public pieces shared with the UFM simulator


def test_minority_index_of_vanishing_tail_vectors_is_collapsed():
    frame = simplex_etf(8, 6, seed=0, dtype=torch.float64).T.numpy()  # (6, 8)
    vecs = frame.copy()
    rng = np.random.default_rng(0)
    vecs[3:] = 1e-9 * rng.normal(size=(3, 8))  # tail shrunk to rounding noise
    assert minority_collapse_index(vecs, [3, 4, 5]) == 1.0
    # the cosine formula on the noise would say anything; distinct small vectors still count
    vecs[3:] = 1e-3 * frame[3:]
    assert minority_collapse_index(vecs, [3, 4, 5]) == pytest.approx(0.0, abs=1e-12)
    assert minority_collapse_index(np.zeros((4, 3)), [0, 1]) == 1.0  # everything at the origin
    assert minority_collapse_index(vecs, [3]) is None


def test_collapse_metrics_of_shrunk_tail_means():
    frame = simplex_etf(8, 6, seed=1, dtype=torch.float64).T
    means = frame.clone()
    means[3:] = 1e-10 * torch.randn(
        3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    y = torch.arange(6).repeat_interleave(4)
    out = collapse_metrics(means[y], y, tail_classes=[3, 4, 5])
    # centred on the class-balanced mean the tail sits at -mean(head) +- 1e-10: coinciding
    assert out["minority_collapse_means"] == 1.0


def test_nc3_distance_and_etf_error():
    frame = simplex_etf(12, 5, seed=2, dtype=torch.float64).T.numpy()
    assert nc3_distance(frame, 3.0 * frame + 7.0) == pytest.approx(0.0, abs=1e-24)  # centred
    assert etf_error(frame) == pytest.approx(0.0, abs=1e-12)
    assert etf_error(np.eye(5)) > 0.1
    rot = np.random.default_rng(3).normal(size=(5, 12))
    assert nc3_distance(rot, frame) > 0.1
    assert math.isnan(nc3_distance(np.zeros((5, 12)), frame))
    geo = vector_geometry(frame)
    assert geo["equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert geo["maxangle"] == pytest.approx(0.0, abs=1e-12)


def test_class_balanced_accuracy_and_the_index_split_only_for_sorted_classes():
    from ncollapse.metrics import balanced_accuracy, sorted_by_count

    # a long-tailed evaluation set: class 0 has 8 images, all right; classes 1, 2 one each, wrong
    y = torch.tensor([0] * 8 + [1, 2])
    p = torch.tensor([0] * 8 + [0, 0])
    out = long_tail_accuracy(p, y, [300, 50, 5])
    assert out["acc"] == pytest.approx(0.8)  # image-weighted: the large class dominates
    assert out["bal_acc"] == pytest.approx(1 / 3)  # the mean of 1, 0, 0
    assert balanced_accuracy(out) == out["bal_acc"]
    # records written before bal_acc existed: the mean of their per-class accuracies
    assert balanced_accuracy({"per_class": [1.0, 0.0, None, 0.5]}) == pytest.approx(0.5)
    assert "many_idx" in out and sorted_by_count([300, 50, 5])
    # classes in name order, not by size (a user's folder): no class-index split
    unsorted = long_tail_accuracy(p, y, [50, 300, 5])
    assert not sorted_by_count([50, 300, 5])
    assert {"many_idx", "medium_idx", "few_idx"}.isdisjoint(unsorted)
    assert unsorted["many"] == pytest.approx(0.0) and unsorted["medium"] == pytest.approx(1.0)
