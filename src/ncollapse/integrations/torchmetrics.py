"""The streaming neural-collapse statistics as a ``torchmetrics.Metric`` (``pip install
'ncollapse[torchmetrics]'``)::

    from ncollapse.integrations.torchmetrics import CollapseMetric

    metric = CollapseMetric(num_classes=10, dim=128, classifier=head.classifier_weight())
    for x, y in loader:
        metric.update(features(x), y)
    metric.compute()  # {"nc1": tensor(...), "nc2_etf_error": ..., "nc3": ..., ...}

It keeps what :class:`~ncollapse.metrics.CollapseAccumulator` keeps (per-class counts and means,
sums of squared deviations, the within-class scatter; memory O(K d + d^2)) and gives the same
numbers as :func:`ncollapse.collapse_metrics` on the same features. Across processes the
statistics are gathered and merged exactly (Chan et al.'s parallel combination, not raw second
moments). NC4 compares each sample's prediction with its nearest class mean, which needs the
final means: a second pass with :meth:`CollapseMetric.update_nc4` adds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

try:
    from torchmetrics import Metric
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "ncollapse.integrations.torchmetrics needs torchmetrics: pip install "
        "'ncollapse[torchmetrics]' (or pip install torchmetrics)"
    ) from exc

from ..metrics import CollapseAccumulator
from . import scalars

__all__ = ["CollapseMetric"]

_F64 = torch.float64


class CollapseMetric(Metric):
    """NC1, NC2, NC3 (with a ``classifier``), minority collapse and, after a second pass, NC4,
    accumulated batch by batch; :meth:`compute` returns a dict of scalar tensors (the keys of
    :func:`ncollapse.collapse_metrics` whose values are numbers).

    ``classifier``: the class vectors (K, d) as rows (``head.classifier_weight()``);
    ``tail_classes``: the classes of the minority-collapse indices (default: from the counts
    seen, as :func:`~ncollapse.metrics.default_tail_classes`).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        dim: int,
        classifier: Tensor | None = None,
        tail_classes: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.classifier = None if classifier is None else torch.as_tensor(classifier).detach()
        self.tail_classes = None if tail_classes is None else list(tail_classes)
        k, d = self.num_classes, self.dim
        # "cat": each process's statistics side by side, merged exactly in compute()
        self.add_state("counts", torch.zeros(k, dtype=_F64), dist_reduce_fx="cat")
        self.add_state("means", torch.zeros(k, d, dtype=_F64), dist_reduce_fx="cat")
        self.add_state("class_ss", torch.zeros(k, dtype=_F64), dist_reduce_fx="cat")
        self.add_state("scatter", torch.zeros(d, d, dtype=_F64), dist_reduce_fx="cat")
        self.add_state("nc4_counts", torch.zeros(2, dtype=_F64), dist_reduce_fx="sum")

    def _accumulator(self, parts: int = 1) -> list[CollapseAccumulator]:
        k, d = self.num_classes, self.dim
        out = []
        for p in range(parts):
            acc = CollapseAccumulator(k, d, device=self.counts.device)
            acc.counts = self.counts.reshape(-1, k)[p].clone()
            acc.means = self.means.reshape(-1, k, d)[p].clone()
            acc.class_ss = self.class_ss.reshape(-1, k)[p].clone()
            acc.scatter = self.scatter.reshape(-1, d, d)[p].clone()
            out.append(acc)
        return out

    def _store(self, acc: CollapseAccumulator) -> None:
        self.counts, self.means = acc.counts, acc.means
        self.class_ss, self.scatter = acc.class_ss, acc.scatter

    def update(self, features: Tensor, labels: Tensor) -> None:  # type: ignore[override]
        """Add a batch: ``features`` (B, d), ``labels`` (B,)."""
        (acc,) = self._accumulator()
        acc.update(features.detach(), labels)
        self._store(acc)

    def update_nc4(self, features: Tensor, logits: Tensor) -> None:
        """Second pass over the same data: count where ``argmax(logits)`` differs from the
        nearest class mean of the first pass (NC4)."""
        (acc,) = self._accumulator()
        acc.update_nc4(features.detach(), logits=logits.detach())
        self.nc4_counts = self.nc4_counts + torch.tensor(
            [acc.nc4_mismatch, acc.nc4_total], dtype=_F64, device=self.nc4_counts.device
        )
        self._computed = None  # a new state: compute() again

    def compute(self) -> dict[str, Tensor]:
        parts = self.counts.numel() // self.num_classes
        accs = self._accumulator(parts)
        acc = accs[0]
        for other in accs[1:]:
            acc.merge(other)
        values = acc.compute(classifier=self.classifier, tail_classes=self.tail_classes)
        mismatch, total = (float(v) for v in self.nc4_counts)
        if total:
            values["nc4"] = mismatch / total
        return {k: torch.tensor(v, dtype=_F64) for k, v in scalars(values).items()}
