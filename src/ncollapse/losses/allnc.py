"""AllNC (Zhang et al., 2024; our reading of the paper, ``docs/allnc.md``): the GBBN schedule
and class-reversed sampler, the objective that combines HyCon, P2P and GBBN, and its criterion.

The paper describes these parts but its exact formulas and hyper-parameters were not available
to us: everything here is **our design** within that description.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import INF, Section, option, section
from ..heads import CosineHead, HeadOutput, LinearHead
from .allnc_parts import ClassMeanMemory, HyConLoss, P2PLoss, class_prototypes
from .base import Batch, Criterion, LossContext, register_loss

__all__ = [
    "AllNCConfig",
    "AllNCCriterion",
    "AllNCObjective",
    "gbbn_alpha",
    "reversed_class_probabilities",
    "reversed_sampling_weights",
]


def gbbn_alpha(epoch: float, epochs: int) -> float:
    """BBN's cumulative schedule ``alpha = 1 - (epoch/epochs)^2``, clamped to [0, 1].

    ``epoch`` is the 0-based index of the epoch being trained (BBN's ``epoch - 1``; a fraction
    for per-iteration schedules): 1 at the start, decreasing to ``1 - ((E-1)/E)^2`` in the last
    epoch and 0 at ``epoch = epochs``.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    a = 1.0 - (float(epoch) / float(epochs)) ** 2
    return min(1.0, max(0.0, a))


def reversed_class_probabilities(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Class probabilities of the class-reversed sampler: ``P(j) = (1/n_j) / sum_l (1/n_l)``
    (BBN's reversed sampler, ``w_j = n_max / n_j`` normalised). float64 (K,)."""
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if c.numel() < 1 or bool((c <= 0).any()):
        raise ValueError(f"class_counts must be positive, got {class_counts!r}")
    inv = 1.0 / c
    return inv / inv.sum()


def reversed_sampling_weights(
    class_counts: Sequence[int] | Tensor, labels: Tensor | None = None
) -> Tensor:
    """Per-sample probabilities of the class-reversed sampler.

    A sample of class j is drawn with probability ``P(j) / n_j`` with ``P`` from
    :func:`reversed_class_probabilities`, so a class is drawn with probability ``∝ 1/n_j`` and
    the probabilities of all N training samples sum to 1. Without ``labels`` returns the
    per-class value (K,) (a sample's weight is ``w[label]``); with ``labels`` (N,) returns the
    per-sample vector (N,), ready for ``torch.utils.data.WeightedRandomSampler`` or
    ``torch.multinomial``.
    """
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    per_class = reversed_class_probabilities(c) / c
    if labels is None:
        return per_class
    return per_class[labels.long().cpu()]


# ------------------------------------------------------------------------------ objective


class AllNCObjective(nn.Module):
    """The AllNC training objective (our formulation; ``docs/allnc.md``).

    With ``alpha = gbbn_alpha(epoch, epochs)`` when ``gbbn`` is on (else ``alpha = 1``)::

        loss = alpha * (CE(instance logits) + hycon_weight * HyCon)
             + (1 - alpha) * CE(reversed logits)                    (only when gbbn is on)
             + p2p_weight * P2P

    The representation-learning side (instance-sampled CE and HyCon) is weighted by ``alpha``,
    the re-balancing side (CE on the class-reversed batch) by ``1 - alpha``: BBN's cumulative
    shift from one to the other. As in BBN, the reversed batch trains the whole network;
    ``gbbn_detach=True`` (an ablation) makes it train only the classifier, the caller computing
    those logits from *detached* features (:meth:`reversed_logits`). P2P couples means and
    classifier and keeps a constant weight. ``centre`` runs HyCon and P2P on directions about
    the class-balanced centre of the class means (:func:`class_prototypes`). Switching a part
    off removes its term (and its computation). The class-mean memory is updated after the loss
    is computed, in training mode only.

    Mixup: the CE terms follow the project's rule ``lam L(y_a) + (1 - lam) L(y_b)``; HyCon, P2P
    and the memory use the dominant label (``y_a`` if ``lam >= 0.5`` else ``y_b``). AllNC is
    meant to run without mixup; this only keeps mixed batches from failing.

    After each call, ``last_terms`` holds each term as a detached scalar tensor (no host sync;
    call ``float()`` when logging) and ``alpha`` as a float.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        hycon: bool = True,
        hycon_weight: float = 1.0,
        hycon_temperature: float = 0.1,
        p2p: bool = True,
        p2p_weight: float = 1.0,
        p2p_temperature: float = 0.5,
        p2p_symmetric: bool = True,
        gbbn: bool = True,
        mean_momentum: float = 0.9,
        batch_weight: float = 0.5,
        centre: bool = True,
        gbbn_detach: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.centre = bool(centre)
        self.gbbn_detach = bool(gbbn_detach)
        self.hycon_on = bool(hycon)
        self.p2p_on = bool(p2p)
        self.gbbn = bool(gbbn)
        self.hycon_weight = float(hycon_weight)
        self.p2p_weight = float(p2p_weight)
        self.batch_weight = float(batch_weight)
        self.memory = ClassMeanMemory(
            num_classes, dim, momentum=mean_momentum, normalize=not self.centre
        )
        self.hycon = HyConLoss(hycon_temperature, batch_weight=batch_weight, centre=self.centre)
        self.p2p = P2PLoss(p2p_temperature, symmetric=p2p_symmetric)
        self.last_terms: dict[str, Tensor | float] = {}

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, dim: int) -> AllNCObjective:
        """Build from an ``AllNCConfig``-like object (attributes ``hycon``, ``hycon_weight``,
        ``hycon_temperature``, ``p2p``, ``p2p_weight``, ``p2p_temperature``, ``p2p_symmetric``,
        ``gbbn``, ``mean_momentum``, ``batch_weight``, ``centre``, ``gbbn_detach``; missing ones
        take the defaults)."""
        names = (
            "hycon",
            "hycon_weight",
            "hycon_temperature",
            "p2p",
            "p2p_weight",
            "p2p_temperature",
            "p2p_symmetric",
            "gbbn",
            "mean_momentum",
            "batch_weight",
            "centre",
            "gbbn_detach",
        )
        kw = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
        return cls(num_classes, dim, **kw)

    @staticmethod
    def reversed_logits(head: nn.Module, features: Tensor) -> Tensor:
        """Logits of the reversed branch for the classifier side: ``head(features.detach())``,
        so that this term trains only the classifier (pass the backbone's pooled features)."""
        return head(features.detach()).logits

    def alpha(self, epoch: float, epochs: int) -> float:
        """The feature-side weight: :func:`gbbn_alpha` when GBBN is on, else 1."""
        return gbbn_alpha(epoch, epochs) if self.gbbn else 1.0

    def forward(
        self,
        features: Tensor,
        logits: Tensor,
        labels: Tensor,
        classifier_weight: Tensor,
        epoch: float = 0,
        epochs: int = 1,
        rev_logits: Tensor | None = None,
        rev_labels: Tensor | None = None,
        target_b: Tensor | None = None,
        lam: float = 1.0,
    ) -> Tensor:
        """Instance branch ``features`` (B, d) and ``logits`` (B, K) (a head's ``HeadOutput``),
        ``labels`` (B,), ``classifier_weight`` (K, d); with GBBN on, also the reversed branch's
        ``rev_logits`` and ``rev_labels``. Returns the scalar loss."""
        alpha = self.alpha(epoch, epochs)
        terms: dict[str, Tensor | float] = {"alpha": alpha}
        if target_b is None:
            ce = F.cross_entropy(logits, labels)
            y_feat = labels
        else:
            ce = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(
                logits, target_b
            )
            y_feat = labels if lam >= 0.5 else target_b
        terms["ce"] = ce.detach()
        feature_side = ce
        if self.hycon_on and self.hycon_weight != 0:
            hc = self.hycon(features, y_feat, self.memory.mean, self.memory.seen)
            terms["hycon"] = hc.detach()
            feature_side = feature_side + self.hycon_weight * hc
        loss = alpha * feature_side
        if self.gbbn:
            if rev_logits is None or rev_labels is None:
                raise ValueError(
                    "AllNC with gbbn on needs the reversed branch: pass rev_logits and rev_labels "
                    "(a batch from the class-reversed sampler), or switch gbbn off"
                )
            ce_rev = F.cross_entropy(rev_logits, rev_labels)
            terms["ce_rev"] = ce_rev.detach()
            loss = loss + (1.0 - alpha) * ce_rev
        if self.p2p_on and self.p2p_weight != 0:
            protos, valid = class_prototypes(
                features, y_feat, self.memory.mean, self.memory.seen, self.batch_weight, self.centre
            )
            pp = self.p2p(protos, classifier_weight, valid)
            terms["p2p"] = pp.detach()
            loss = loss + self.p2p_weight * pp
        if self.training:
            self.memory.update(features, y_feat)
        terms["loss"] = loss.detach()
        self.last_terms = terms
        return loss

    def extra_repr(self) -> str:
        return (
            f"hycon={self.hycon_on} (w={self.hycon_weight:g}), p2p={self.p2p_on} "
            f"(w={self.p2p_weight:g}), gbbn={self.gbbn} (detach={self.gbbn_detach}), "
            f"centre={self.centre}"
        )


class AllNCCriterion(Criterion):
    """The engine-facing AllNC criterion.

    ``out`` is the instance branch's output; with GBBN on, the criterion asks the engine for a
    class-reversed batch (``sampling_weights["reversed"]``) and gets its output in
    ``batch.extra["reversed"]``: its logits train the whole network, as in BBN. With
    ``gbbn_detach`` on (an ablation), ``network.head`` recomputes the reversed logits from the
    detached features, so that term trains only the classifier (for a
    :class:`~ncollapse.heads.LinearHead` or :class:`~ncollapse.heads.CosineHead`; other heads'
    logits are used as given). ``set_epoch`` (0-based) drives the GBBN schedule over ``epochs``;
    the state of a checkpoint is the class-mean memory.
    """

    def __init__(
        self,
        objective: AllNCObjective,
        network: nn.Module,
        epochs: int,
        sampling_weights: dict[str, Tensor] | None = None,
    ) -> None:
        self.loss = objective
        self.network = network
        self.epochs = int(epochs)
        self.epoch = 0
        self.sampling_weights = dict(sampling_weights or {})

    without_extra = "--set allnc.gbbn=false"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def to(self, device: torch.device | str) -> AllNCCriterion:
        self.loss.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.loss.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state)

    @property
    def last_terms(self) -> dict[str, Tensor | float]:
        """Each term of the last call, detached (see :class:`AllNCObjective`)."""
        return self.loss.last_terms

    def __call__(self, batch: Batch, out: HeadOutput) -> Tensor:
        net = self.network
        rev_logits = rev_labels = None
        if "reversed" in batch.extra:
            out_rev, rev_labels = batch.extra["reversed"]
            head = getattr(net, "head", None)
            if self.loss.gbbn_detach and isinstance(head, (LinearHead, CosineHead)):
                rev_logits = AllNCObjective.reversed_logits(head, out_rev.features)
            else:
                rev_logits = out_rev.logits
        mixed = batch.y_b is not None and batch.lam < 1.0
        self.loss.train(net.training)
        return self.loss(
            out.features,
            out.logits,
            batch.y,
            net.classifier_weight(),
            epoch=self.epoch,
            epochs=self.epochs,
            rev_logits=rev_logits,
            rev_labels=rev_labels,
            target_b=batch.y_b if mixed else None,
            lam=batch.lam if mixed else 1.0,
        )


class AllNCConfig(Section, key="allnc"):
    """AllNC components (docs/allnc.md); each can be switched off for ablation."""

    hycon: bool = option(
        True, "HyCon, the hybrid contrastive loss (sample against class means and samples)"
    )
    hycon_weight: float = option(1.0, "weight of HyCon", range=(0, INF, "[)"))
    hycon_temperature: float = option(0.1, "temperature of HyCon", range=(0, INF, "()"))
    p2p: bool = option(True, "P2P, the loss that aligns each class mean with its classifier row")
    p2p_weight: float = option(1.0, "weight of P2P", range=(0, INF, "[)"))
    p2p_temperature: float = option(0.5, "temperature of P2P", range=(0, INF, "()"))
    p2p_symmetric: bool = option(
        True, "P2P in both directions (each mean finds its row, each row its mean)"
    )
    gbbn: bool = option(
        True,
        "GBBN: a second, class-reversed batch whose loss weight grows as (epoch/epochs)^2 while "
        "the natural batch's falls (docs/allnc.md)",
    )
    mean_momentum: float = option(
        0.9, "momentum of the per-class memory of feature means", range=(0, 1, "[]")
    )
    batch_weight: float = option(
        0.5,
        "class prototype = mix of in-batch mean (this share) and memory",
        range=(0, 1, "[]"),
    )
    centre: bool = option(
        True, "HyCon/P2P on directions about the class-balanced centre of the means"
    )
    gbbn_detach: bool = option(False, "ablation: the reversed batch trains only the classifier")


@register_loss("allnc", options={"allnc": section(AllNCConfig)})
def build_allnc(ctx: LossContext) -> AllNCCriterion:
    """``loss.name=allnc``: the ``allnc.*`` options, GBBN over ``optim.epochs``."""
    weight = ctx.network.classifier_weight()
    num_classes, dim = int(weight.shape[0]), int(weight.shape[1])
    if len(ctx.class_counts) != num_classes:
        raise ValueError(
            f"class_counts has {len(ctx.class_counts)} classes but the classifier has {num_classes}"
        )
    objective = AllNCObjective.from_config(ctx.cfg.allnc, num_classes, dim)
    weights = {}
    if objective.gbbn:  # the class-reversed batch of GBBN's re-balancing branch
        w = reversed_sampling_weights(ctx.class_counts, ctx.train_labels)
        weights["reversed"] = torch.as_tensor(w, dtype=torch.float32)
    return AllNCCriterion(objective, ctx.network, ctx.cfg.optim.epochs, weights)
