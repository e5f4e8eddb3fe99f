"""Training losses and the criterion contract the engine calls.

- :mod:`.base`: :class:`Criterion`, :class:`Batch`, :class:`LossContext`, the :data:`LOSSES`
  registry and :func:`register_loss`;
- :mod:`.dr`: the dot-regression loss (Yang et al., 2022);
- :mod:`.logit`: cross-entropy, logit adjustment, balanced softmax, focal, LDAM, deferred
  re-weighting and post-hoc logit adjustment;
- :mod:`.allnc_parts` and :mod:`.allnc`: All-around Neural Collapse (our reading).

Mixup rule, the same for every loss here: with partner labels ``target_b`` and coefficient
``lam``, the loss is ``lam * L(target) + (1 - lam) * L(target_b)``; without ``target_b`` it is
``L(target)``. Class counts are the training-set counts per class in label order.
"""

from __future__ import annotations

from .allnc import (
    AllNCConfig,
    AllNCCriterion,
    AllNCObjective,
    gbbn_alpha,
    reversed_class_probabilities,
    reversed_sampling_weights,
)
from .allnc_parts import ClassMeanMemory, HyConLoss, P2PLoss, batch_class_means, class_prototypes
from .base import LOSSES, Batch, Criterion, LossContext, log_prior, register_loss
from .dr import BALANCE_MODES, DotRegressionLoss, DRCriterion
from .logit import (
    BalancedSoftmaxLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    LogitCriterion,
    MixupCrossEntropy,
    drw_start,
    drw_weights,
    ldam_margins,
    posthoc_logit_adjust,
)

__all__ = [
    "BALANCE_MODES",
    "LOSSES",
    "AllNCConfig",
    "AllNCCriterion",
    "AllNCObjective",
    "BalancedSoftmaxLoss",
    "Batch",
    "ClassMeanMemory",
    "Criterion",
    "DRCriterion",
    "DotRegressionLoss",
    "FocalLoss",
    "HyConLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "LogitCriterion",
    "LossContext",
    "MixupCrossEntropy",
    "P2PLoss",
    "batch_class_means",
    "build_criterion",
    "class_prototypes",
    "drw_start",
    "drw_weights",
    "gbbn_alpha",
    "ldam_margins",
    "log_prior",
    "posthoc_logit_adjust",
    "register_loss",
    "reversed_class_probabilities",
    "reversed_sampling_weights",
]


def build_criterion(ctx: LossContext) -> Criterion:
    """The criterion ``ctx.cfg.loss.name`` names, from its registered builder."""
    from ..registry import call_factory

    return call_factory(LOSSES.get(ctx.cfg.loss.name), ctx)
