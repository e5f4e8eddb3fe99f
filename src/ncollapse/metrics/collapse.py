"""Neural-collapse measurements (SPEC section 6), in memory and streaming.

All statistics are computed in float64. Notation: K classes, d feature dimension, n_k samples
of class k, class means mu_k, class-balanced mean mu_bar = (1/K) sum_k mu_k (used for centring
under imbalance, not the sample-weighted global mean), centred means m_k = mu_k - mu_bar, and
W the (K, d) classifier (rows = class vectors).

Classes with no sample in the measured data are *excluded* from every mean-based statistic
(their mean is undefined): K above is then the number of present classes, mu_bar averages the
present classes only, and they are listed under ``"missing_classes"``. Per-class lists
(``mean_norms``) hold ``None`` for them. The classifier statistics (``w_*``) use all K rows;
NC3 compares the present rows of W with the present centred means.

``collapse_metrics`` works on arrays held in memory. :class:`CollapseAccumulator` computes the
same numbers from batches with memory O(K d + d^2), independent of N; NC4 needs the class means
first, so it takes a second pass (:meth:`CollapseAccumulator.update_nc4`).
:func:`measure_collapse` runs both passes over a re-iterable source of batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .accuracy import FEW_THRESHOLD

__all__ = [
    "CollapseAccumulator",
    "collapse_metrics",
    "default_tail_classes",
    "measure_collapse",
]

_F64 = torch.float64


def _as_tensor(x: Any, name: str, dtype: torch.dtype = _F64, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def _as_labels(x: Any, n: int | None = None, device=None) -> torch.Tensor:
    y = _as_tensor(x, "labels", dtype=torch.int64, device=device)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"features have {n} rows but labels have {y.shape[0]}")
    return y


def default_tail_classes(class_counts: Sequence[int]) -> list[int]:
    """The tail classes T for the minority-collapse indices (SPEC section 6, our design).

    The few-shot classes (training count < 20) if there are at least two; otherwise the
    smallest third by count: the ``max(2, K // 3)`` classes with the smallest counts (ties go
    to the larger class index, i.e. later classes in a long-tail profile). Zero counts are
    ignored (a class that is absent cannot collapse). Returns sorted class indices.
    """
    counts = [int(c) for c in class_counts]
    present = [k for k, c in enumerate(counts) if c > 0]
    few = [k for k in present if counts[k] < FEW_THRESHOLD]
    if len(few) >= 2:
        return sorted(few)
    size = max(2, len(counts) // 3)
    order = sorted(present, key=lambda k: (counts[k], -k))
    return sorted(order[:size])


# ----------------------------------------------------------------------------------------------
# statistics shared by the in-memory and streaming paths


def _vector_geometry(vecs: torch.Tensor) -> dict:
    """NC2-type statistics of the rows of ``vecs`` (K, d): norms, cosines, ETF error."""
    k = vecs.shape[0]
    norms = vecs.norm(dim=1)
    out: dict[str, Any] = {"norms": norms}
    mean_norm = norms.mean()
    out["equinorm"] = float(norms.std(unbiased=False) / mean_norm) if mean_norm > 0 else math.nan
    unit = vecs / norms.clamp_min(1e-300).unsqueeze(1)
    gram = unit @ unit.T
    iu = torch.triu_indices(k, k, offset=1)
    cos = gram[iu[0], iu[1]]
    out["cos"] = gram
    out["equiangular"] = float(cos.std(unbiased=False)) if cos.numel() else math.nan
    out["maxangle"] = float((cos + 1.0 / (k - 1)).abs().mean()) if cos.numel() else math.nan
    target = torch.eye(k, dtype=vecs.dtype) - torch.full((k, k), 1.0 / k, dtype=vecs.dtype)
    gnorm = gram.norm()
    out["etf_error"] = (
        float((gram / gnorm - target / target.norm()).norm()) if gnorm > 0 else math.nan
    )
    return out


def _minority_index(gram: torch.Tensor, members: list[int], k: int) -> float | None:
    """(mean pairwise cosine among ``members`` + 1/(K-1)) / (1 + 1/(K-1)); None if < 2."""
    if len(members) < 2:
        return None
    idx = torch.as_tensor(members)
    sub = gram[idx][:, idx]
    iu = torch.triu_indices(len(members), len(members), offset=1)
    cos_mean = float(sub[iu[0], iu[1]].mean())
    off = 1.0 / (k - 1)
    return (cos_mean + off) / (1.0 + off)


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _finalize(
    counts: torch.Tensor,
    means: torch.Tensor,
    scatter: torch.Tensor,
    class_ss: torch.Tensor,
    classifier: Any = None,
    tail_classes: Sequence[int] | None = None,
) -> dict:
    """Every statistic except NC4, from float64 CPU sufficient statistics.

    counts (K,), means (K, d) uncentred, scatter (d, d) = sum_k sum_{i in k} (h_i-mu_k)(h_i-mu_k)^T,
    class_ss (K,) = sum_{i in k} ||h_i - mu_k||^2.
    """
    num_classes, dim = means.shape
    present = [k for k in range(num_classes) if counts[k] > 0]
    missing = [k for k in range(num_classes) if counts[k] <= 0]
    if len(present) < 2:
        raise ValueError(
            f"collapse metrics need at least 2 classes with samples, got {len(present)}"
        )
    kp = len(present)
    pidx = torch.as_tensor(present)
    n_total = float(counts.sum())
    mu = means[pidx]
    mu_bar = mu.mean(dim=0)
    mc = mu - mu_bar  # (Kp, d) centred means
    out: dict[str, Any] = {
        "num_classes": int(num_classes),
        "num_samples": int(n_total),
        "class_counts": [int(c) for c in counts.tolist()],
        "missing_classes": missing,
    }

    # NC1 = (1/K) tr(Sigma_W Sigma_B^+), Sigma_B = Mc^T Mc / K: via the SVD Mc = U S V^T,
    # Sigma_B^+ = K V diag(1/s^2) V^T on the numerically non-zero singular values.
    sigma_w = scatter / n_total
    _, s, vh = torch.linalg.svd(mc, full_matrices=False)
    eig = s**2
    keep = eig > eig.max() * max(kp, dim) * torch.finfo(_F64).eps if eig.max() > 0 else eig > 0
    v = vh[keep]  # (r, d)
    quad = ((v @ sigma_w) * v).sum(dim=1)  # v_j^T Sigma_W v_j
    out["nc1"] = float((kp * quad / eig[keep]).sum() / kp) if keep.any() else math.inf

    # CDNV: mean over pairs k != l of (s_k^2 + s_l^2) / (2 ||mu_k - mu_l||^2)
    var = class_ss[pidx] / counts[pidx]
    iu = torch.triu_indices(kp, kp, offset=1)
    dist2 = ((mu[iu[0]] - mu[iu[1]]) ** 2).sum(dim=1)
    num = var[iu[0]] + var[iu[1]]
    safe = torch.where(dist2 > 0, 2 * dist2, torch.ones_like(dist2))
    inf_or_zero = torch.where(num > 0, math.inf, 0.0).to(_F64)
    ratio = torch.where(dist2 > 0, num / safe, inf_or_zero)  # coinciding means: inf (or 0/0 -> 0)
    out["cdnv"] = float(ratio.mean())

    geo = _vector_geometry(mc)
    out["nc2_equinorm"] = _clean(geo["equinorm"])
    out["nc2_equiangular"] = _clean(geo["equiangular"])
    out["nc2_maxangle"] = _clean(geo["maxangle"])
    out["nc2_etf_error"] = _clean(geo["etf_error"])
    mean_norms: list[float | None] = [None] * num_classes
    for j, k in enumerate(present):
        mean_norms[k] = float(geo["norms"][j])
    out["mean_norms"] = mean_norms

    tail = (
        default_tail_classes(counts.tolist())
        if tail_classes is None
        else sorted(int(t) for t in tail_classes)
    )
    out["tail_classes"] = tail
    pos = {k: j for j, k in enumerate(present)}
    out["minority_collapse_means"] = _minority_index(
        geo["cos"], [pos[t] for t in tail if t in pos], kp
    )

    if classifier is not None:
        w = _as_tensor(classifier, "classifier").cpu()
        if w.shape != (num_classes, dim):
            raise ValueError(
                f"classifier must have shape (K, d) = ({num_classes}, {dim}), got {tuple(w.shape)}"
            )
        wg = _vector_geometry(w)
        out["w_equinorm"] = _clean(wg["equinorm"])
        out["w_equiangular"] = _clean(wg["equiangular"])
        out["w_maxangle"] = _clean(wg["maxangle"])
        out["w_etf_error"] = _clean(wg["etf_error"])
        out["w_norms"] = [float(x) for x in wg["norms"]]
        wp = w[pidx]
        out["nc3"] = float(((wp / wp.norm() - mc / mc.norm()).norm()) ** 2)
        out["minority_collapse_w"] = _minority_index(wg["cos"], tail, num_classes)
    return out


def _nearest_mean(
    features: torch.Tensor, means: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """Index of the nearest class mean (among present classes) for each row of features."""
    mu = means[present]
    d2 = (features**2).sum(1, keepdim=True) - 2 * features @ mu.T + (mu**2).sum(1).unsqueeze(0)
    return present[d2.argmin(dim=1)]


def _logits(features: torch.Tensor, classifier: Any, bias: Any) -> torch.Tensor:
    w = _as_tensor(classifier, "classifier", device=features.device)
    out = features @ w.T
    if bias is not None:
        out = out + _as_tensor(bias, "bias", device=features.device)
    return out


def collapse_metrics(
    features: Any,
    labels: Any,
    classifier: Any = None,
    tail_classes: Sequence[int] | None = None,
    num_classes: int | None = None,
    bias: Any = None,
) -> dict:
    """All neural-collapse measurements of ``features`` (N, d) with ``labels`` (N,), in memory.

    ``classifier``: optional (K, d) matrix (rows: class vectors); ``bias``: optional (K,) added to
    the logits for NC4 (linear heads). ``tail_classes``: the set T of the minority-collapse
    indices (default :func:`default_tail_classes` of the *label counts of these data*: pass the
    training-set tail classes when measuring a balanced test set). ``num_classes`` defaults to
    the classifier's rows, else ``max(label) + 1``.

    Keys: nc1, cdnv, nc2_equinorm, nc2_equiangular, nc2_maxangle, nc2_etf_error,
    minority_collapse_means, mean_norms, class_counts, missing_classes, tail_classes,
    num_classes, num_samples; with a classifier also w_equinorm, w_equiangular, w_maxangle,
    w_etf_error, w_norms, nc3, nc4, minority_collapse_w. Values are Python floats / lists
    (``None`` where undefined, e.g. a minority index with fewer than two tail classes).
    """
    h = _as_tensor(features, "features").cpu()
    if h.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(h.shape)}")
    y = _as_labels(labels, h.shape[0]).cpu()
    if num_classes is None:
        if classifier is not None:
            num_classes = int(np.shape(classifier)[0])
        else:
            num_classes = int(y.max()) + 1
    k = int(num_classes)
    if y.numel() and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{int(y.min())}, {int(y.max())}]")
    d = h.shape[1]
    counts = torch.bincount(y, minlength=k).to(_F64)
    sums = torch.zeros(k, d, dtype=_F64).index_add_(0, y, h)
    means = sums / counts.clamp_min(1).unsqueeze(1)
    centred = h - means[y]
    scatter = centred.T @ centred
    class_ss = torch.zeros(k, dtype=_F64).index_add_(0, y, (centred**2).sum(1))
    out = _finalize(counts, means, scatter, class_ss, classifier, tail_classes)
    if classifier is not None:
        present = torch.nonzero(counts > 0).flatten()
        pred = _logits(h, classifier, bias).argmax(dim=1)
        ncc = _nearest_mean(h, means, present)
        out["nc4"] = float((pred != ncc).to(_F64).mean())
    return out


class CollapseAccumulator:
    """Streaming neural-collapse statistics: memory O(K d + d^2), independent of N.

    Pass 1: :meth:`update` with every batch of (features, labels). It keeps, in float64,
    per-class counts and means, the per-class sum of squared deviations, and the pooled
    within-class scatter matrix, merged batch by batch with Chan et al.'s parallel update (each
    batch is centred on its own per-class means, then the correction
    ``n_a n_b / (n_a + n_b) * delta delta^T`` merges it), so there is no cancellation from
    raw second moments.

    Pass 2 (optional, for NC4): :meth:`update_nc4` with (features, labels, logits) for the same
    data, after the first pass is complete: it compares argmax of the logits with the nearest
    class mean *of the first pass*.

    :meth:`compute` returns the dict of :func:`collapse_metrics` (``nc4`` only after pass 2).
    """

    def __init__(self, num_classes: int, dim: int, device: Any = None) -> None:
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        k, d, dev = self.num_classes, self.dim, self.device
        self.counts = torch.zeros(k, dtype=_F64, device=dev)
        self.means = torch.zeros(k, d, dtype=_F64, device=dev)
        self.class_ss = torch.zeros(k, dtype=_F64, device=dev)
        self.scatter = torch.zeros(d, d, dtype=_F64, device=dev)
        self.nc4_mismatch = 0
        self.nc4_total = 0

    @torch.no_grad()
    def update(self, features: Any, labels: Any) -> None:
        """Add a batch: ``features`` (B, d), ``labels`` (B,)."""
        h = _as_tensor(features, "features", device=self.device)
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got shape {tuple(h.shape)}")
        y = _as_labels(labels, h.shape[0], device=self.device)
        if y.numel() == 0:
            return
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        k = self.num_classes
        nb = torch.bincount(y, minlength=k).to(_F64)
        sums = torch.zeros(k, self.dim, dtype=_F64, device=self.device).index_add_(0, y, h)
        mb = sums / nb.clamp_min(1).unsqueeze(1)
        centred = h - mb[y]
        self.scatter += centred.T @ centred
        ss_b = torch.zeros(k, dtype=_F64, device=self.device).index_add_(0, y, (centred**2).sum(1))
        seen = torch.nonzero(nb > 0).flatten()
        na = self.counts[seen]
        nbs = nb[seen]
        ntot = na + nbs
        delta = mb[seen] - self.means[seen]
        weight = na * nbs / ntot  # 0 for classes seen for the first time
        self.scatter += (delta * weight.unsqueeze(1)).T @ delta
        self.class_ss[seen] += ss_b[seen] + weight * (delta**2).sum(1)
        self.means[seen] += delta * (nbs / ntot).unsqueeze(1)
        self.counts[seen] = ntot

    @torch.no_grad()
    def update_nc4(
        self,
        features: Any,
        labels: Any = None,
        logits: Any = None,
        classifier: Any = None,
        bias: Any = None,
    ) -> None:
        """Second pass: count samples where argmax(logits) != nearest class mean of pass 1.

        ``logits`` (B, K) are the model's; without them they are ``features @ classifier.T +
        bias``. ``labels`` are accepted for symmetry with :meth:`update` and not used.
        """
        h = _as_tensor(features, "features", device=self.device)
        if logits is None:
            if classifier is None:
                raise ValueError("update_nc4 needs logits or a classifier")
            logits = _logits(h, classifier, bias)
        lg = _as_tensor(logits, "logits", device=self.device)
        present = torch.nonzero(self.counts > 0).flatten()
        if present.numel() == 0:
            raise RuntimeError("update_nc4 needs the first pass (update) to be complete")
        ncc = _nearest_mean(h, self.means, present)
        self.nc4_mismatch += int((lg.argmax(dim=1) != ncc).sum())
        self.nc4_total += h.shape[0]

    def compute(
        self,
        classifier: Any = None,
        bias: Any = None,
        tail_classes: Sequence[int] | None = None,
    ) -> dict:
        """The metrics dict (see :func:`collapse_metrics`); ``nc4`` after a second pass.

        ``bias`` is accepted for symmetry (it only matters for NC4, whose logits come from
        :meth:`update_nc4`).
        """
        del bias
        out = _finalize(
            self.counts.cpu(),
            self.means.cpu(),
            self.scatter.cpu(),
            self.class_ss.cpu(),
            classifier,
            tail_classes,
        )
        if self.nc4_total:
            out["nc4"] = self.nc4_mismatch / self.nc4_total
        return out

    def state(self) -> dict:
        """Arrays for :func:`ncollapse.report.save_collapse_state` (uncentred class means)."""
        counts = self.counts.cpu().numpy()
        means = self.means.cpu().numpy()
        return {
            "class_means": means,
            "global_mean": (means * counts[:, None]).sum(0) / max(counts.sum(), 1.0),
            "class_counts": counts.astype(np.int64),
        }


def measure_collapse(
    batches_factory: Callable[[], Iterable[tuple[Any, Any, Any]]],
    num_classes: int,
    dim: int,
    classifier: Any = None,
    bias: Any = None,
    tail_classes: Sequence[int] | None = None,
    device: Any = None,
) -> dict:
    """Two passes over ``batches_factory()`` (each call a fresh iterable of
    ``(features, logits, labels)``): statistics first, then NC4 against those means.

    ``logits`` may be ``None`` in the tuples when a ``classifier`` (and optional ``bias``) is
    given; NC4 is reported whenever logits or a classifier are available.
    """
    acc = CollapseAccumulator(num_classes, dim, device=device)
    any_logits = False
    for feats, logits, labels in batches_factory():
        acc.update(feats, labels)
        any_logits = any_logits or logits is not None
    if any_logits or classifier is not None:
        for feats, logits, labels in batches_factory():
            acc.update_nc4(feats, labels, logits=logits, classifier=classifier, bias=bias)
    return acc.compute(classifier=classifier, bias=bias, tail_classes=tail_classes)
