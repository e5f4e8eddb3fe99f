"""The dot-regression loss of Yang et al. (NeurIPS 2022) and its criterion."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import INF, option
from ..heads import HeadOutput
from .base import Batch, Counts, Criterion, LossContext, _counts, _mix, register_loss

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
            ``"global"``: ``a_i = (N/K) / n_{y_i}`` from ``class_counts`` (required).
        reg_lam: weight of the mean feature norm (0 for CIFAR-type data; 0.01 in the official
            ImageNet recipe). This term has a gradient (it is not detached).
        class_counts: training counts per class (needed for ``balance="global"``).
    """

    class_weight: Tensor | None

    def __init__(
        self,
        balance: str = "batch",
        reg_lam: float = 0.0,
        class_counts: Counts | None = None,
    ) -> None:
        super().__init__()
        if balance not in BALANCE_MODES:
            raise ValueError(
                f"unknown balance {balance!r}; valid choices: {', '.join(BALANCE_MODES)}"
            )
        if reg_lam < 0:
            raise ValueError(f"reg_lam must be >= 0, got {reg_lam}")
        self.balance = balance
        self.reg_lam = float(reg_lam)
        weight = None
        if balance == "global":
            if class_counts is None:
                raise ValueError(
                    "balance='global' needs class_counts (the training-set count of each class)"
                )
            c = _counts(class_counts)
            weight = (c.sum() / c.numel()) / c
        self.register_buffer("class_weight", weight, persistent=False)

    def weights(self, target: Tensor, num_classes: int) -> Tensor | None:
        """Per-class weights (K,) for this batch (``None`` for ``balance="none"``)."""
        if self.balance == "none":
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
        return f"balance={self.balance!r}, reg_lam={self.reg_lam:g}"


class DRCriterion(Criterion):
    """DR on the head's features against its fixed frame (``head.frame``), with mixup."""

    def __init__(self, loss: DotRegressionLoss, head: nn.Module) -> None:
        self.loss = loss
        self.head = head

    def __call__(self, batch: Batch, out: HeadOutput) -> Tensor:
        return self.loss(out.features, batch.y, self.head.frame, batch.y_b, batch.lam)

    def to(self, device: torch.device | str) -> DRCriterion:
        self.loss.to(device)
        return self


@register_loss(
    "dr",
    options={
        "loss.balance": option(
            "batch", "class weights: batch (the official), none or global", choices=BALANCE_MODES
        ),
        "loss.reg_lam": option(0.0, "weight of the mean feature norm", range=(0, INF, "[)")),
    },
    requires={"model.head": "etf"},
    why="regresses onto the fixed ETF",
    default=True,
)
def build_dr(ctx: LossContext) -> DRCriterion:
    """``loss.name=dr`` (needs ``model.head=etf``): ``loss.balance``, ``loss.reg_lam``."""
    lc = ctx.cfg.loss
    loss = DotRegressionLoss(balance=lc.balance, reg_lam=lc.reg_lam, class_counts=ctx.class_counts)
    return DRCriterion(loss, ctx.network.head)
