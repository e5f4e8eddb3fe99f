"""The fixed ETF classifier and the DR loss as drop-ins for a plain PyTorch or Lightning model:
:class:`ETFClassifier` replaces ``nn.Linear(d, K)`` (it returns logits), :class:`DRLoss`
replaces ``nn.CrossEntropyLoss()`` (``loss(logits, target)``)::

    model.fc = ncollapse.ETFClassifier(512, num_classes)  # was nn.Linear(512, num_classes)
    criterion = ncollapse.DRLoss(model.fc)                # was nn.CrossEntropyLoss()
    loss = criterion(model(x), y)

The DR loss regresses the *feature* onto its class vertex. With the default feature
normalisation (``bn_l2``: BatchNorm, then unit length) the logits determine it: the logit of
class ``y`` is ``scale * cos(h, w_y)`` and ``||h|| = 1``, so the loss and its gradient computed
from the logits are those of :class:`~ncollapse.losses.DotRegressionLoss` on the features. For
the other normalisations the loss takes the features the classifier kept from the forward pass
that made these logits (:attr:`ETFClassifier.last_output`), or a ``HeadOutput``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .heads import ETFHead, HeadOutput
from .losses.base import _mix
from .losses.dr import DotRegressionLoss

__all__ = ["DRLoss", "ETFClassifier"]


class ETFClassifier(ETFHead):
    """A fixed simplex-ETF classifier that returns logits: ``forward(f) -> scale * h @ frame``
    with ``h = normalise(f)`` (BatchNorm and L2 normalisation by default), a drop-in for
    ``nn.Linear(in_features, num_classes)``.

    The arguments, the ``frame`` buffer and the ``state_dict`` are those of
    :class:`~ncollapse.heads.ETFHead` (the two load each other's weights). After each forward
    :attr:`last_output` holds ``HeadOutput(features, logits)`` of that call and
    :attr:`features` the normalised features ``h``: what :class:`DRLoss` and the collapse
    metrics use.
    """

    last_output: HeadOutput | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_output = None

    def forward(self, f: Tensor) -> Tensor:  # type: ignore[override]
        """``f`` (B, d) -> logits (B, K)."""
        out = super().forward(f)
        self.last_output = out
        return out.logits

    def output(self, f: Tensor) -> HeadOutput:
        """``HeadOutput(features, logits)`` of ``f``, as :class:`ETFHead` returns it."""
        self.forward(f)
        assert self.last_output is not None
        return self.last_output

    @property
    def features(self) -> Tensor | None:
        """The normalised features of the last forward (None before the first)."""
        return None if self.last_output is None else self.last_output.features


class DRLoss(nn.Module):
    """The dot-regression loss called as ``loss(logits_or_output, target)``, like a
    cross-entropy (mixup: ``loss(out, y_a, target_b=y_b, lam=lam)``).

    Args:
        classifier: the :class:`ETFClassifier` (or :class:`~ncollapse.heads.ETFHead`) whose
            frame the features regress onto (it is not registered as a submodule: the loss has
            no parameters of its own). Without one, the logits are taken to be the cosines to a
            frame of unit columns at scale 1 (``bn_l2`` features).
        balance: class weights, as :class:`~ncollapse.losses.DotRegressionLoss`
            (``"batch"``: the released code's per-batch class weights).
        reg_lam: weight of the mean feature norm.
        class_counts: training counts per class (for ``balance="global"``).
        balance_power: the power of the global class weights.

    As in ncollapse's own training, the loss acts on the classifier's scaled feature
    ``scale * h`` (``DR(s h) = s DR(h)``; ``scale = 1``, the default, is the released code's).

    ``logits_or_output``: the classifier's logits (B, K): the loss uses the features that
    classifier kept from the forward pass that made them when these are they, else (``bn_l2``
    features only) the logits themselves; or a ``HeadOutput`` ``(features, logits)``.
    """

    def __init__(
        self,
        classifier: nn.Module | None = None,
        *,
        balance: str = "batch",
        reg_lam: float = 0.0,
        class_counts: Sequence[int] | None = None,
        balance_power: float = 1.0,
    ) -> None:
        super().__init__()
        self.dr = DotRegressionLoss(
            balance=balance,
            reg_lam=reg_lam,
            class_counts=class_counts,
            balance_power=balance_power,
            scale=float(getattr(classifier, "scale", 1.0)),
        )
        self._classifier = (classifier,)  # a tuple: not a submodule, its parameters not ours
        if classifier is not None and not hasattr(classifier, "frame"):
            raise ValueError(
                f"DRLoss needs a fixed-ETF classifier (ETFClassifier or ETFHead), got "
                f"{type(classifier).__name__}"
            )

    @property
    def classifier(self) -> nn.Module | None:
        return self._classifier[0]

    def forward(
        self,
        logits_or_output: Tensor | HeadOutput,
        target: Tensor,
        target_b: Tensor | None = None,
        lam: float = 1.0,
    ) -> Tensor:
        clf = self.classifier
        out = logits_or_output
        if isinstance(out, tuple) and hasattr(out, "features"):  # a HeadOutput
            if clf is None:
                raise ValueError("DRLoss(classifier) is needed to score a HeadOutput's features")
            return self.dr(out.features, target, clf.frame, target_b, lam)
        last = getattr(clf, "last_output", None)
        if last is not None and last.logits is out:  # the features behind these very logits
            return self.dr(last.features, target, clf.frame, target_b, lam)  # type: ignore[union-attr]
        norm = getattr(clf, "feature_norm", "bn_l2")
        if norm != "bn_l2":
            raise ValueError(
                f"DRLoss: with feature_norm={norm!r} the logits do not determine the features; "
                "pass the classifier's own output (the logits it returned, or "
                "classifier.last_output) or use feature_norm='bn_l2'"
            )
        return self._from_cosines(out, target, target_b, lam)

    def _from_cosines(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None, lam: float
    ) -> Tensor:
        """DR of unit features from their logits: ``s/2 (<h, w_y> - ||w_y||)^2``, weighted
        (``s`` the logit scale: the loss of the scaled feature ``s h``)."""
        clf = self.classifier
        scale = float(getattr(clf, "scale", 1.0))
        dots = logits.float() / scale
        k = dots.shape[1]
        w_norm = (
            clf.frame.to(dots).norm(dim=0)  # type: ignore[union-attr]
            if clf is not None
            else torch.ones(k, device=dots.device)
        )
        class_w = self.dr.weights(target, k)

        def dr(y: Tensor) -> Tensor:
            per = 0.5 * (dots.gather(1, y[:, None]).squeeze(1) - w_norm[y]) ** 2
            if class_w is not None:
                per = class_w.to(per.dtype)[y] * per
            return per.mean()

        loss = self.dr.scale * _mix(dr, target, target_b, lam)
        if self.dr.reg_lam > 0:  # the mean norm of the scaled unit features: s, no gradient
            loss = loss + self.dr.reg_lam * self.dr.scale
        return loss

    def extra_repr(self) -> str:
        return self.dr.extra_repr()
