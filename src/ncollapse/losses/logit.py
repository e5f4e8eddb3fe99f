"""The logit losses of the long-tail baselines (cross-entropy, logit adjustment, balanced
softmax, focal, LDAM), deferred re-weighting, post-hoc logit adjustment, and their criterion."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import INF, option, scale_epochs
from ..errors import ConfigError
from ..heads import HeadOutput
from .base import (
    LOSSES,
    Batch,
    Counts,
    Criterion,
    LossContext,
    _counts,
    _mix,
    log_prior,
    register_loss,
)

__all__ = [
    "BalancedSoftmaxLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "LogitCriterion",
    "MixupCrossEntropy",
    "drw_start",
    "drw_weights",
    "ldam_margins",
    "posthoc_logit_adjust",
]


class _LogitLoss(nn.Module):
    """Base of the logit losses: optional per-class weight, settable later (DRW)."""

    weight: Tensor | None

    def __init__(self, weight: Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", None, persistent=False)
        self.set_class_weight(weight)

    def set_class_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Set (or clear, with ``None``) the per-class weight used from now on, e.g. the
        :func:`drw_weights` at the deferred re-weighting epoch. A weighted loss is
        ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (PyTorch's weighted-mean convention)."""
        if weight is None:
            self.weight = None
            return
        w = torch.as_tensor(weight, dtype=torch.float32).flatten()
        if self.weight is not None:
            w = w.to(self.weight.device)
        self.weight = w

    def _w(self, ref: Tensor) -> Tensor | None:
        return None if self.weight is None else self.weight.to(device=ref.device, dtype=ref.dtype)

    def _ce(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, weight=self._w(logits))


class MixupCrossEntropy(_LogitLoss):
    """Cross-entropy with the mixup rule; optional per-class ``weight`` (see ``set_class_weight``)."""

    def forward(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None = None, lam: float = 1.0
    ) -> Tensor:
        return _mix(lambda y: self._ce(logits, y), target, target_b, lam)


class LogitAdjustedLoss(_LogitLoss):
    """Logit-adjusted cross-entropy (Menon et al., 2021): ``CE(logits + tau * log prior, y)``
    with ``prior_j = n_j / N``."""

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Counts,
        tau: float = 1.0,
        weight: Tensor | Sequence[float] | None = None,
    ) -> None:
        super().__init__(weight)
        self.tau = float(tau)
        self.register_buffer("log_prior", log_prior(class_counts), persistent=False)

    def forward(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None = None, lam: float = 1.0
    ) -> Tensor:
        adjusted = logits + self.tau * self.log_prior.to(device=logits.device, dtype=logits.dtype)
        return _mix(lambda y: self._ce(adjusted, y), target, target_b, lam)


class BalancedSoftmaxLoss(_LogitLoss):
    """Balanced softmax (Ren et al., 2020): ``CE(logits + log n_j, y)``.

    Equal to :class:`LogitAdjustedLoss` at ``tau=1`` (``log prior = log n - log N`` shifts every
    logit by the same constant, which the softmax ignores), up to float rounding.
    """

    log_counts: Tensor

    def __init__(
        self, class_counts: Counts, weight: Tensor | Sequence[float] | None = None
    ) -> None:
        super().__init__(weight)
        self.register_buffer("log_counts", torch.log(_counts(class_counts)), persistent=False)

    def forward(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None = None, lam: float = 1.0
    ) -> Tensor:
        adjusted = logits + self.log_counts.to(device=logits.device, dtype=logits.dtype)
        return _mix(lambda y: self._ce(adjusted, y), target, target_b, lam)


class FocalLoss(_LogitLoss):
    """Focal loss (Lin et al., 2017): ``-(1 - p_t)^gamma log p_t``, averaged over the batch
    (weighted mean ``sum w_{y_i} l_i / sum w_{y_i}`` when a class weight is set). ``gamma=0``
    is cross-entropy.

    Note: the LDAM-DRW code computes its weighted focal loss as ``(1 - exp(-w CE))^gamma w CE``
    (the weight inside ``p_t``); here the weight multiplies the per-sample focal loss instead.
    """

    def __init__(self, gamma: float = 1.0, weight: Tensor | Sequence[float] | None = None) -> None:
        super().__init__(weight)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def _focal(self, logits: Tensor, y: Tensor) -> Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        per = -((1.0 - logp.exp()).clamp_min(0.0) ** self.gamma) * logp
        w = self._w(logits)
        if w is None:
            return per.mean()
        wy = w[y]
        return (wy * per).sum() / wy.sum()

    def forward(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None = None, lam: float = 1.0
    ) -> Tensor:
        return _mix(lambda y: self._focal(logits, y), target, target_b, lam)


def ldam_margins(class_counts: Counts, max_margin: float = 0.5) -> Tensor:
    """LDAM margins ``Delta_j = C / n_j^(1/4)`` with ``C`` chosen so the largest is ``max_margin``."""
    c = _counts(class_counts)
    m = c.pow(-0.25)
    return m * (max_margin / m.max())


class LDAMLoss(_LogitLoss):
    """Label-distribution-aware margin loss (Cao et al., 2019).

    ``CE(scale * (logits - Delta_y e_y), y)`` with the margins of :func:`ldam_margins` (largest
    ``max_margin``, for the rarest class) subtracted from the true-class logit, and an optional
    per-class ``weight`` (set it later with ``set_class_weight(drw_weights(...))`` for LDAM-DRW).
    The official code applies it to cosine logits of a normalised linear layer; here it takes
    whatever logits the head gives.
    """

    margins: Tensor

    def __init__(
        self,
        class_counts: Counts,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Tensor | Sequence[float] | None = None,
    ) -> None:
        super().__init__(weight)
        if max_margin <= 0 or scale <= 0:
            raise ValueError(f"LDAM needs max_margin > 0 and scale > 0, got {max_margin}, {scale}")
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.register_buffer("margins", ldam_margins(class_counts, max_margin), persistent=False)

    def _ldam(self, logits: Tensor, y: Tensor) -> Tensor:
        m = self.margins.to(device=logits.device, dtype=logits.dtype)
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return self._ce(self.scale * (logits - onehot * m[y][:, None]), y)

    def forward(
        self, logits: Tensor, target: Tensor, target_b: Tensor | None = None, lam: float = 1.0
    ) -> Tensor:
        return _mix(lambda y: self._ldam(logits, y), target, target_b, lam)


def drw_weights(class_counts: Counts, beta: float = 0.9999) -> Tensor:
    """Deferred re-weighting weights (Cui et al. effective number, as in LDAM-DRW):
    ``w_j = (1 - beta) / (1 - beta^n_j)``, normalised to sum to K. Returns float32 (K,)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"drw beta must be in [0, 1), got {beta}")
    c = _counts(class_counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), c))
    w = w / w.sum() * c.numel()
    return w.float()


def posthoc_logit_adjust(logits: Tensor, class_counts: Counts, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment (Menon et al.): ``logits - tau * log prior``, ``prior = n/N``."""
    lp = log_prior(class_counts).to(device=logits.device, dtype=logits.dtype)
    return logits - tau * lp


class LogitCriterion(Criterion):
    """A logit loss on the head's logits, with mixup and optional deferred re-weighting: from
    the 0-based epoch ``drw[0]`` on, the class weights ``drw[1]`` are set on the loss."""

    def __init__(self, loss: _LogitLoss, drw: tuple[int, Tensor] | None = None) -> None:
        self.loss = loss
        self.drw = drw

    def __call__(self, batch: Batch, out: HeadOutput) -> Tensor:
        return self.loss(out.logits, batch.y, batch.y_b, batch.lam)

    def set_epoch(self, epoch: int) -> None:
        if self.drw is not None:
            start, weight = self.drw
            self.loss.set_class_weight(weight if epoch >= start else None)

    def to(self, device: torch.device | str) -> LogitCriterion:
        self.loss.to(device)
        if self.drw is not None:
            self.drw = (self.drw[0], self.drw[1].to(device))
        return self


#: deferred re-weighting: the keys every logit loss reads
_DRW = {
    "loss.drw": option(False, "deferred re-weighting (class weights switched on late in training)"),
    "loss.drw_epoch": option(
        None,
        "drw from this epoch (None: the first lr milestone); sets drw",
        type=int | None,
        scale=scale_epochs(0),
    ),
    "loss.drw_beta": option(
        0.9999, "deferred re-weighting: effective-number beta", range=(0, 1, "[)")
    ),
}


def drw_start(cfg: Any) -> int | None:
    """The 0-based epoch from which deferred re-weighting is on, or None when it is off:
    ``loss.drw_epoch`` when set (setting it turns DRW on), else the first lr milestone when
    ``loss.drw`` is true (LDAM-DRW re-weights from the first decay: epoch 160 of 200)."""
    if cfg.loss.drw_epoch is not None:
        return cfg.loss.drw_epoch
    if not cfg.loss.drw:
        return None
    if not cfg.optim.milestones:
        raise ConfigError(
            "loss.drw=true starts re-weighting at the first lr milestone, but optim.milestones "
            "is empty; set loss.drw_epoch=N"
        )
    return int(cfg.optim.milestones[0])


@LOSSES.add_check
def _check_drw(cfg: Any) -> None:
    start = drw_start(cfg)
    if start is not None and start < 0:
        raise ConfigError(f"loss.drw_epoch must be >= 0, got {start}")
    takers = [name for _, name in _DRW["loss.drw"].users]  # the losses that declare it
    if start is not None and cfg.loss.name not in takers:
        raise ConfigError(
            f"deferred re-weighting (loss.drw / loss.drw_epoch) is an option of the losses "
            f"({', '.join(takers)}); loss.name={cfg.loss.name} has none: unset loss.drw and "
            "loss.drw_epoch"
        )
    if start is not None and start >= cfg.optim.epochs:
        warnings.warn(
            f"deferred re-weighting starts at epoch {start} but the run has {cfg.optim.epochs} "
            "epochs, so it never switches on; lower loss.drw_epoch (or the first of "
            "optim.milestones)",
            stacklevel=2,
        )


def _check_ldam(cfg: Any) -> None:
    if cfg.model.head in ("linear", "linear-frozen"):
        warnings.warn(
            f"loss.name=ldam on model.head={cfg.model.head}: LDAM's margins and scale "
            f"(loss.ldam_max_margin={cfg.loss.ldam_max_margin:g}, "
            f"loss.ldam_scale={cfg.loss.ldam_scale:g}) are sized for cosine logits in [-1, 1] "
            "and usually make a plain linear classifier diverge; set model.head=cosine",
            stacklevel=2,
        )


def _logit_criterion(ctx: LossContext, loss: _LogitLoss) -> LogitCriterion:
    start = drw_start(ctx.cfg)
    drw = (
        None
        if start is None
        else (start, drw_weights(ctx.class_counts, beta=ctx.cfg.loss.drw_beta))
    )
    return LogitCriterion(loss, drw)


@register_loss("ce", options=_DRW)
def build_ce(ctx: LossContext) -> LogitCriterion:
    """``loss.name=ce``: cross-entropy."""
    return _logit_criterion(ctx, MixupCrossEntropy())


@register_loss("la", options={**_DRW, "loss.tau": option(1.0, "logit-adjustment temperature")})
def build_la(ctx: LossContext) -> LogitCriterion:
    """``loss.name=la``: logit-adjusted cross-entropy, ``loss.tau``."""
    return _logit_criterion(ctx, LogitAdjustedLoss(ctx.class_counts, tau=ctx.cfg.loss.tau))


@register_loss("bs", options=_DRW)
def build_bs(ctx: LossContext) -> LogitCriterion:
    """``loss.name=bs``: balanced softmax."""
    return _logit_criterion(ctx, BalancedSoftmaxLoss(ctx.class_counts))


@register_loss(
    "focal",
    options={
        **_DRW,
        "loss.focal_gamma": option(1.0, "focusing parameter", range=(0, INF, "[)")),
    },
)
def build_focal(ctx: LossContext) -> LogitCriterion:
    """``loss.name=focal``: focal loss, ``loss.focal_gamma``."""
    return _logit_criterion(ctx, FocalLoss(gamma=ctx.cfg.loss.focal_gamma))


@register_loss(
    "ldam",
    options={
        **_DRW,
        "loss.ldam_max_margin": option(0.5, "largest per-class margin", range=(0, INF, "[)")),
        "loss.ldam_scale": option(30.0, "logit scale s", range=(0, INF, "()")),
    },
    check=_check_ldam,
)
def build_ldam(ctx: LossContext) -> LogitCriterion:
    """``loss.name=ldam``: LDAM, ``loss.ldam_max_margin``, ``loss.ldam_scale``."""
    lc = ctx.cfg.loss
    loss = LDAMLoss(ctx.class_counts, max_margin=lc.ldam_max_margin, scale=lc.ldam_scale)
    return _logit_criterion(ctx, loss)
