"""The dot-regression loss of Yang et al. (NeurIPS 2022) and its criterion."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..config import INF, option
from ..errors import ConfigError
from ..heads import HeadOutput
from .base import Batch, Counts, Criterion, LossContext, _counts, _mix, register_loss
from .logit import _DRW, drw_start

__all__ = ["BALANCE_MODES", "DRCriterion", "DotRegressionLoss"]

BALANCE_MODES: tuple[str, ...] = ("batch", "none", "global")


class DotRegressionLoss(nn.Module):
    """The dot-regression loss of Yang et al. (NeurIPS 2022; docs/method.md).

    For features ``h_i`` and target vertices ``w_i = frame[:, y_i]``::

        DR_i = 1/2 (<h_i, w_i> - ||w_i|| sg(||h_i||))^2 / sg(||h_i||)
        L    = (1/B) sum_i a_i DR_i + reg_lam (1/B) sum_i ||h_i||

    with ``sg`` stop-gradient and ``||h||`` clamped below at 1e-8. The gradient with respect to
    ``h_i`` is parallel to ``w_i``: the loss only pulls towards the own vertex.

    Args:
        balance: class weights ``a_i``.
            ``"batch"`` (official default): ``a_i = (B/|U|) / n_{y_i}`` with ``n_c`` the count of
            class ``c`` in the mini-batch and ``U`` the classes present, computed from the
            un-mixed labels ``target`` (the official code's column scaling of the frame by
            ``sqrt(B/|U|/n_c)``, written as a weight; the same loss). Under mixup the partner
            term uses the same per-class weights, indexed by its own labels (as the official
            scaled frame does); a class absent from ``target`` gets weight 1, as in the official
            code.
            ``"none"``: ``a_i = 1``.
            ``"global"``: ``a_i = (N/K) / n_{y_i}`` from ``class_counts`` (required), raised to
            ``balance_power`` and normalised so that the mean weight per training sample is 1.
        reg_lam: weight of the mean feature norm (0 for CIFAR-type data; 0.01 in the official
            ImageNet recipe). This term has a gradient (it is not detached).
        class_counts: training counts per class (needed for ``balance="global"``).
        balance_power: the power ``p`` of the ``"global"`` weights, ``a_c`` proportional to
            ``n_c^-p``: 1 (the default) weighs every class equally in total, 0 is ``"none"``,
            values between temper the re-weighting.
        scale: the loss is computed on ``scale * h``, which multiplies it (and its gradient) by
            ``scale``: ``DR(s h) = s DR(h)`` (the ETF head's logit scale ``s``, so that the
            regression acts on the feature the logits are made of). 1 is the released code's.
    """

    class_weight: Tensor | None

    def __init__(
        self,
        balance: str = "batch",
        reg_lam: float = 0.0,
        class_counts: Counts | None = None,
        balance_power: float = 1.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if balance not in BALANCE_MODES:
            raise ValueError(
                f"unknown balance {balance!r}; valid choices: {', '.join(BALANCE_MODES)}"
            )
        if reg_lam < 0:
            raise ValueError(f"reg_lam must be >= 0, got {reg_lam}")
        if not balance_power >= 0:
            raise ValueError(f"balance_power must be >= 0, got {balance_power}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.balance = balance
        self.reg_lam = float(reg_lam)
        self.balance_power = float(balance_power)
        self.scale = float(scale)
        #: False switches the class weights off (``balance="none"`` until deferred weighting
        #: starts; :class:`DRCriterion` sets it per epoch)
        self.weighted = True
        weight = None
        if balance == "global":
            if class_counts is None:
                raise ValueError(
                    "balance='global' needs class_counts (the training-set count of each class)"
                )
            c = _counts(class_counts)
            weight = ((c.sum() / c.numel()) / c) ** self.balance_power
            weight = weight * (c.sum() / (c * weight).sum())  # mean 1 per training sample
        self.register_buffer("class_weight", weight, persistent=False)

    def weights(self, target: Tensor, num_classes: int) -> Tensor | None:
        """Per-class weights (K,) for this batch (``None`` for ``balance="none"``)."""
        if self.balance == "none" or not self.weighted:
            return None
        if self.balance == "global":
            assert self.class_weight is not None
            if self.class_weight.numel() != num_classes:
                raise ValueError(
                    f"class_counts has {self.class_weight.numel()} classes but the frame has "
                    f"{num_classes}"
                )
            return self.class_weight.to(target.device)
        # the batch's class counts, as bincount gives them, without its host sync (which no
        # CUDA graph can hold: engine/graphs.py captures the step)
        classes = torch.arange(num_classes, device=target.device)
        counts = (target[:, None] == classes).sum(0).to(torch.float32)
        present = counts > 0
        gamma = target.numel() / present.sum().to(torch.float32)
        return torch.where(present, gamma / counts.clamp_min(1.0), torch.ones_like(counts))

    def forward(
        self,
        features: Tensor,
        target: Tensor,
        frame: Tensor,
        target_b: Tensor | None = None,
        lam: float = 1.0,
    ) -> Tensor:
        """``features`` (B, d), ``target`` (B,) int64, ``frame`` (d, K) with the vertices as
        columns (``ETFHead.frame``); returns a scalar."""
        if self.scale != 1.0:
            features = self.scale * features
        frame = frame.to(features.dtype)
        num_classes = frame.shape[1]
        h_norm = features.detach().norm(dim=1).clamp_min(1e-8)
        class_w = self.weights(target, num_classes)

        def dr(y: Tensor) -> Tensor:
            w = frame[:, y].T  # (B, d)
            dot = (features * w).sum(dim=1)
            per = 0.5 * (dot - w.norm(dim=1) * h_norm) ** 2 / h_norm
            if class_w is not None:
                per = class_w.to(per.dtype)[y] * per
            return per.mean()

        loss = _mix(dr, target, target_b, lam)
        if self.reg_lam > 0:
            loss = loss + self.reg_lam * features.norm(dim=1).mean()
        return loss

    def extra_repr(self) -> str:
        out = f"balance={self.balance!r}, reg_lam={self.reg_lam:g}"
        if self.balance_power != 1.0:
            out += f", balance_power={self.balance_power:g}"
        return out + (f", scale={self.scale:g}" if self.scale != 1.0 else "")


class DRCriterion(Criterion):
    """DR on the head's features against its fixed frame (``head.frame``), with mixup; with
    ``defer`` (an epoch), the class weights are off before that epoch (deferred weighting)."""

    def __init__(self, loss: DotRegressionLoss, head: nn.Module, defer: int | None = None) -> None:
        self.loss = loss
        self.head = head
        self.defer = defer

    def __call__(self, batch: Batch, out: HeadOutput) -> Tensor:
        return self.loss(out.features, batch.y, self.head.frame, batch.y_b, batch.lam)

    def set_epoch(self, epoch: int) -> None:
        self.loss.weighted = self.defer is None or epoch >= self.defer

    def to(self, device: torch.device | str) -> DRCriterion:
        self.loss.to(device)
        return self


def _check_dr(cfg: Any) -> None:
    lc = cfg.loss
    if lc.balance_power != 1.0 and lc.balance != "global":
        raise ConfigError(
            f"loss.balance_power={lc.balance_power:g} tempers the global class weights; it has "
            f"no effect with loss.balance={lc.balance}: set loss.balance=global, or drop it"
        )
    if drw_start(cfg) is not None and lc.balance == "none":
        raise ConfigError(
            "loss.drw / loss.drw_epoch defer the DR class weights, but loss.balance=none has "
            "none: set loss.balance=global (or batch), or unset loss.drw and loss.drw_epoch"
        )


@register_loss(
    "dr",
    options={
        "loss.balance": option(
            "batch", "class weights: batch (the official), none or global", choices=BALANCE_MODES
        ),
        "loss.reg_lam": option(0.0, "weight of the mean feature norm", range=(0, INF, "[)")),
        "loss.balance_power": option(
            1.0,
            "power p of the global class weights, n_c^-p (1: each class equal in total; 0: none)",
            range=(0, INF, "[)"),
        ),
        # deferred weighting: no class weights before loss.drw_epoch (or the first milestone)
        "loss.drw": _DRW["loss.drw"],
        "loss.drw_epoch": _DRW["loss.drw_epoch"],
    },
    requires={"model.head": "etf"},
    check=_check_dr,
    why="regresses onto the fixed ETF",
    default=True,
)
def build_dr(ctx: LossContext) -> DRCriterion:
    """``loss.name=dr`` (needs ``model.head=etf``): ``loss.balance`` (and its
    ``loss.balance_power``), ``loss.reg_lam``, deferred weighting (``loss.drw``,
    ``loss.drw_epoch``); the loss is scaled by the head's ``model.scale``."""
    lc = ctx.cfg.loss
    head = ctx.network.head
    loss = DotRegressionLoss(
        balance=lc.balance,
        reg_lam=lc.reg_lam,
        class_counts=ctx.class_counts,
        balance_power=lc.balance_power,
        scale=float(getattr(head, "scale", 1.0)),
    )
    return DRCriterion(loss, head, defer=drw_start(ctx.cfg))
