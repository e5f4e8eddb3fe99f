"""Training losses: dot regression (SPEC section 3) and the logit losses of the long-tail baselines.

Signatures (``docs/architecture.md``, "Losses"):

- ``DotRegressionLoss(...)(features, target, frame, target_b=None, lam=1.0)``
- logit losses: ``loss(logits, target, target_b=None, lam=1.0)``

Mixup rule, the same for every loss here: with partner labels ``target_b`` and coefficient
``lam``, the loss is ``lam * L(target) + (1 - lam) * L(target_b)``; without ``target_b`` it is
``L(target)``.

Class counts (``class_counts``) are the training-set counts per class in label order, as a list
or a 1-D tensor; they are kept as (non-persistent) float64 buffers, so ``loss.to(device)`` moves them, and
are cast to the dtype of the input at each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BALANCE_MODES",
    "BalancedSoftmaxLoss",
    "DotRegressionLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MixupCrossEntropy",
    "drw_weights",
    "ldam_margins",
    "log_prior",
    "posthoc_logit_adjust",
]

BALANCE_MODES: tuple[str, ...] = ("batch", "none", "global")

Counts = Sequence[int] | Tensor


def _counts(class_counts: Counts, name: str = "class_counts") -> Tensor:
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if c.numel() < 1 or bool((c <= 0).any()):
        raise ValueError(
            f"{name} must be a non-empty list of positive counts, got {class_counts!r}"
        )
    return c


def log_prior(class_counts: Counts) -> Tensor:
    """``log(n_j / N)`` as a float64 tensor of shape (K,)."""
    c = _counts(class_counts)
    return torch.log(c / c.sum())


def _mix(
    fn: Callable[[Tensor], Tensor], target: Tensor, target_b: Tensor | None, lam: float
) -> Tensor:
    """``lam * fn(target) + (1 - lam) * fn(target_b)`` (just ``fn(target)`` without a partner)."""
    if target_b is None:
        return fn(target)
    return lam * fn(target) + (1.0 - lam) * fn(target_b)


# ------------------------------------------------------------------------------ dot regression


class DotRegressionLoss(nn.Module):
    """The dot-regression loss of Yang et al. (SPEC section 3).

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
        counts = torch.bincount(target, minlength=num_classes).to(torch.float32)
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


# ------------------------------------------------------------------------------ logit losses


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
