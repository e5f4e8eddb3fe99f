"""What the engine measures on a network's outputs: long-tail accuracy and neural collapse.

The composition layer builds an :class:`Evaluator` (the class counts, the tail classes, an
optional logit transform such as post-hoc logit adjustment) and hands it to the trainer; the
trainer feeds it ``(features, logits, labels)`` batches in eval mode, always in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ..metrics import CollapseAccumulator, default_tail_classes, long_tail_accuracy
from .distributed import SINGLE, Distributed

__all__ = ["Evaluator", "merge_statistics", "network_outputs", "resident_batches"]

Outputs = Iterable[tuple[Tensor, Tensor, Tensor]]


class Evaluator:
    """Accuracy (overall, per class, many/medium/few by count and by class index) and the
    neural-collapse metrics of one split.

    ``logit_transform``: applied to the logits before the argmax (e.g. post-hoc logit
    adjustment); ``tail_classes``: the classes of the minority-collapse index (default: the
    few-shot classes, else the smallest third).
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        *,
        logit_transform: Callable[[Tensor], Tensor] | None = None,
        tail_classes: Sequence[int] | None = None,
    ) -> None:
        self.class_counts = list(class_counts)
        self.logit_transform = logit_transform
        self.tail_classes = (
            list(tail_classes) if tail_classes is not None else default_tail_classes(class_counts)
        )

    def predictions(self, outputs: Outputs) -> tuple[Tensor, Tensor]:
        """``(predicted class, label)`` of every sample, on the CPU."""
        preds, labels = [], []
        for _, logits, y in outputs:
            if self.logit_transform is not None:
                logits = self.logit_transform(logits)
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
        if not preds:  # a data-parallel rank's share of a tiny split may be empty
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        return torch.cat(preds), torch.cat(labels)

    def accuracy(self, outputs: Outputs, dist: Distributed = SINGLE) -> dict[str, Any]:
        """The accuracy record of :func:`ncollapse.metrics.long_tail_accuracy` (under torchrun,
        of every rank's predictions, gathered)."""
        preds, labels = self.predictions(outputs)
        if dist.enabled:
            preds, labels = dist.gather_rows(preds), dist.gather_rows(labels)
        return long_tail_accuracy(preds, labels, self.class_counts)

    def collapse(
        self,
        outputs: Callable[[], Outputs],
        classifier: Tensor,
        bias: Tensor | None,
        device: torch.device | None = None,
        dist: Distributed = SINGLE,
    ) -> tuple[dict[str, Any], CollapseAccumulator]:
        """Neural-collapse metrics from two streaming passes over ``outputs()`` (class
        statistics, then NC4 against those means); returns the metrics and the accumulator
        (whose class means a run keeps for plots). Under torchrun each rank passes over its
        share and the statistics are merged exactly (:func:`merge_statistics`)."""
        weight = classifier.detach().float()
        acc = CollapseAccumulator(len(self.class_counts), weight.shape[1], device=device)
        for feats, _, labels in outputs():
            acc.update(feats, labels)
        merge_statistics(acc, dist)
        for feats, logits, labels in outputs():
            acc.update_nc4(feats, labels, logits=logits)
        if dist.enabled:
            nc4 = torch.tensor([acc.nc4_mismatch, acc.nc4_total], dtype=torch.float64)
            nc4 = dist.all_reduce_sum(nc4)
            acc.nc4_mismatch, acc.nc4_total = int(nc4[0]), int(nc4[1])
        values = acc.compute(classifier=weight, bias=bias, tail_classes=self.tail_classes)
        return values, acc


@torch.no_grad()
def merge_statistics(acc: CollapseAccumulator, dist: Distributed) -> None:
    """Replace each rank's first-pass statistics in ``acc`` by those of all ranks' samples.

    Exact (Chan et al.'s parallel combination, for any number of parts): the global class means
    come from the summed counts and sums; each rank's scatter and per-class sums of squares are
    moved to the global means by ``n_rk (mu_rk - mu_k)(mu_rk - mu_k)^T`` and summed. In float64;
    deviations, never raw second moments, so nothing cancels. One process: nothing to do.
    """
    if not dist.enabled:
        return
    counts, means = acc.counts.clone(), acc.means.clone()
    total = dist.all_reduce_sum(torch.cat([counts[:, None], means * counts[:, None]], 1))
    n = total[:, 0]
    mu = total[:, 1:] / n.clamp_min(1).unsqueeze(1)
    delta = means - mu
    scatter = acc.scatter + (delta * counts.unsqueeze(1)).T @ delta
    class_ss = acc.class_ss + counts * (delta**2).sum(1)
    d = acc.dim
    packed = dist.all_reduce_sum(torch.cat([scatter.flatten(), class_ss]))
    acc.counts, acc.means = n, mu
    acc.scatter, acc.class_ss = packed[: d * d].view(d, d).clone(), packed[d * d :].clone()


@torch.no_grad()
def network_outputs(
    network: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]], tta: bool = False
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(features, logits, labels)`` of ``network`` in eval mode over normalised ``batches``,
    in float32 (no autocast: what is measured is measured in full precision). With ``tta`` the
    logits are the mean of the image's and its mirror image's; the features are the image's."""
    network.eval()
    for x, y in batches:
        with torch.autocast(x.device.type, enabled=False):  # also inside a caller's autocast
            out = network(x.float())
            logits = out.logits.float()
            if tta:
                logits = 0.5 * (logits + network(x.float().flip(3)).logits.float())
        yield out.features.float(), logits, y


def resident_batches(
    images: Tensor,
    labels: Tensor,
    normalize: Callable[[Tensor], Tensor],
    batch_size: int,
    memory_format: torch.memory_format = torch.preserve_format,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised batches, in order, from resident uint8 ``images``."""
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i : i + batch_size]).contiguous(memory_format=memory_format)
        yield x, labels[i : i + batch_size]
