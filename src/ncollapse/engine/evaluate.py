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

__all__ = ["Evaluator", "network_outputs", "resident_batches"]

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
        return torch.cat(preds), torch.cat(labels)

    def accuracy(self, outputs: Outputs) -> dict[str, Any]:
        """The accuracy record of :func:`ncollapse.metrics.long_tail_accuracy`."""
        preds, labels = self.predictions(outputs)
        return long_tail_accuracy(preds, labels, self.class_counts)

    def collapse(
        self,
        outputs: Callable[[], Outputs],
        classifier: Tensor,
        bias: Tensor | None,
        device: torch.device | None = None,
    ) -> tuple[dict[str, Any], CollapseAccumulator]:
        """Neural-collapse metrics from two streaming passes over ``outputs()`` (class
        statistics, then NC4 against those means); returns the metrics and the accumulator
        (whose class means a run keeps for plots)."""
        weight = classifier.detach().float()
        acc = CollapseAccumulator(len(self.class_counts), weight.shape[1], device=device)
        for feats, _, labels in outputs():
            acc.update(feats, labels)
        for feats, logits, labels in outputs():
            acc.update_nc4(feats, labels, logits=logits)
        values = acc.compute(classifier=weight, bias=bias, tail_classes=self.tail_classes)
        return values, acc


@torch.no_grad()
def network_outputs(
    network: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]], tta: bool = False
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(features, logits, labels)`` of ``network`` in eval mode over normalised ``batches``,
    in float32 (no autocast: what is measured is measured in full precision). With ``tta`` the
    logits are the mean of the image's and its mirror image's; the features are the image's."""
    network.eval()
    for x, y in batches:
        out = network(x)
        logits = out.logits.float()
        if tta:
            logits = 0.5 * (logits + network(x.flip(3)).logits.float())
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
