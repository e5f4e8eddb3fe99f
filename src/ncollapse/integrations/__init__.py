"""Optional integrations, each needing its own package (the pip extras of the same name):

- :mod:`ncollapse.integrations.lightning`: :class:`~ncollapse.integrations.lightning.CollapseCallback`,
  NC1-NC4 and minority collapse on a dataloader every N epochs, logged (``pip install
  'ncollapse[lightning]'``);
- :mod:`ncollapse.integrations.torchmetrics`: :class:`~ncollapse.integrations.torchmetrics.CollapseMetric`,
  the streaming collapse statistics as a ``torchmetrics.Metric`` (``pip install
  'ncollapse[torchmetrics]'``).

Nothing here is imported by ``import ncollapse``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..heads import HeadOutput

__all__ = ["SCALAR_KEYS", "find_classifier", "scalars"]

#: the collapse metrics logged as scalars (docs/metrics.md)
SCALAR_KEYS = (
    "nc1",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf_error",
    "w_equinorm",
    "w_equiangular",
    "w_etf_error",
    "nc3",
    "nc4",
    "minority_collapse_means",
    "minority_collapse_w",
)


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar metrics of a collapse-metrics dict (lists and None left out)."""
    out = {}
    for k in SCALAR_KEYS:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and v == v and abs(v) != float("inf"):
            out[k] = float(v)
    return out


def find_classifier(model: nn.Module, classifier: nn.Module | str | None = None) -> nn.Module:
    """The classifier module of ``model``: ``classifier`` itself, the submodule it names
    (``"fc"``, ``"head.linear"``), or else the last fixed-ETF, ncollapse head or ``nn.Linear``
    in ``model``."""
    if isinstance(classifier, nn.Module):
        return classifier
    if isinstance(classifier, str):
        return model.get_submodule(classifier)
    from ..heads import CosineHead, ETFHead, LinearHead

    found = [
        m
        for m in model.modules()
        if isinstance(m, (ETFHead, LinearHead, CosineHead)) or type(m) is nn.Linear
    ]
    heads = [m for m in found if not isinstance(m, nn.Linear)]
    if heads:
        return heads[-1]
    if found:
        return found[-1]
    raise ValueError(
        f"no classifier found in {type(model).__name__} (an ETFClassifier, an ncollapse head or "
        "an nn.Linear): pass classifier= the module, or its name"
    )


def classifier_weight(module: nn.Module) -> tuple[Tensor, Tensor | None]:
    """The class vectors (K, d) as rows and the bias of a classifier module."""
    if hasattr(module, "classifier_weight"):
        bias = getattr(getattr(module, "linear", None), "bias", None)
        return module.classifier_weight().detach(), None if bias is None else bias.detach()
    bias = getattr(module, "bias", None)
    return module.weight.detach(), None if bias is None else bias.detach()


def features_and_logits(
    module: nn.Module, inputs: tuple[Any, ...], output: Any
) -> tuple[Tensor, Tensor]:
    """What a forward hook on the classifier sees, as ``(features, logits)``: the vectors the
    classifier multiplies and its output."""
    if isinstance(output, HeadOutput):
        return output.features, output.logits
    last = getattr(module, "last_output", None)
    if isinstance(last, HeadOutput) and last.logits is output:  # an ETFClassifier
        return last.features, last.logits
    return inputs[0], output
