"""From a config to the objects the engine runs: the network and the criterion.

This is the one place that knows which head goes with which loss; the engine only calls
``network(x) -> HeadOutput`` and ``criterion(out, y_a, y_b, lam) -> loss``.

Methods are named presets over the config (``ce``, ``etf_dr``, ...): a small dict of overrides
applied before the user's own ``--set`` values, see :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import Config, drw_start
from .errors import ConfigError, did_you_mean
from .heads import HeadOutput, build_head
from .models import build_backbone

__all__ = [
    "METHODS",
    "Criterion",
    "Network",
    "build_criterion",
    "build_network",
    "method_overrides",
]

#: Named methods: config overrides that select a head and a loss. ``etf_ce`` uses a logit scale
#: of 10 because cosines in [-1, 1] cannot make a confident softmax (the official s = 1 cripples
#: that ablation; ``--set model.scale=1`` restores it).
METHODS: dict[str, dict[str, Any]] = {
    "ce": {"model": {"head": "linear"}, "loss": {"name": "ce"}},
    "ce_frozen": {"model": {"head": "linear-frozen"}, "loss": {"name": "ce"}},
    "etf_dr": {"model": {"head": "etf"}, "loss": {"name": "dr"}},
    "etf_ce": {"model": {"head": "etf", "scale": 10.0}, "loss": {"name": "ce"}},
    "la": {"model": {"head": "linear"}, "loss": {"name": "la", "tau": 1.0}},
    "bs": {"model": {"head": "linear"}, "loss": {"name": "bs"}},
    "focal": {"model": {"head": "linear"}, "loss": {"name": "focal"}},
    # LDAM's margins and scale 30 are sized for cosine logits (Cao et al.'s normed linear layer)
    # and DRW switches the class weights on at the first lr decay (epoch 160 of 200)
    "ldam_drw": {"model": {"head": "cosine"}, "loss": {"name": "ldam", "drw": True}},
    # AllNC's HyCon/P2P need one label per sample, so its preset trains without mixup
    "allnc": {
        "model": {"head": "linear"},
        "loss": {"name": "allnc"},
        "optim": {"mixup_alpha": 0.0},
    },
}


def method_overrides(name: str) -> dict[str, Any]:
    """The config overrides of method ``name`` (a :class:`ConfigError` names the closest one)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'" + did_you_mean(name, METHODS))
    return METHODS[name]


class Network(nn.Module):
    """Backbone followed by a head: ``forward(x) -> HeadOutput(features, logits)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return self.head(self.backbone(x))

    def classifier_weight(self) -> torch.Tensor:
        """Class vectors as rows, shape (K, d)."""
        return self.head.classifier_weight()

    def classifier_bias(self) -> torch.Tensor | None:
        bias = getattr(getattr(self.head, "linear", None), "bias", None)
        return None if bias is None else bias.detach()


def build_network(cfg: Config, num_classes: int, in_channels: int) -> Network:
    """The backbone and head named in ``cfg.model``; a head that cannot exist (an ETF wider than
    the feature) raises a :class:`ConfigError` that names the width option."""
    m = cfg.model
    try:
        backbone = build_backbone(m.backbone, in_channels=in_channels, width=m.width)
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    d = backbone.out_features
    kwargs: dict[str, Any] = {}
    if m.head == "etf":
        kwargs = {"feature_norm": m.feature_norm, "scale": m.scale, "seed": m.etf_seed}
    elif m.head == "cosine":
        kwargs = {"scale": m.scale}
    try:
        head = build_head(m.head, d, num_classes, **kwargs)
    except ValueError as exc:
        hint = ""
        if m.head == "etf" and d < num_classes - 1:
            need = -(-(num_classes - 1) // max(d // max(m.width, 1), 1))
            hint = (
                f" The {m.backbone} backbone at model.width={m.width} gives {d}-dimensional "
                f"features; set model.width={need} (or more), e.g. `--set model.width={need}`."
            )
        raise ConfigError(f"{exc}{hint}") from None
    return Network(backbone, head)


class Criterion:
    """Binds a loss to what it needs (the ETF frame, class counts, the epoch) behind one call:
    ``criterion(out, y_a, y_b, lam) -> scalar``, with ``y_b``/``lam`` the mixup partner."""

    def __init__(
        self, fn, *, uses: str, loss: nn.Module, drw: tuple[int, torch.Tensor] | None = None
    ) -> None:
        self._fn = fn
        self.uses = uses
        self.loss = loss
        self._drw = drw

    def __call__(
        self, out: HeadOutput, y_a: torch.Tensor, y_b: torch.Tensor, lam: float
    ) -> torch.Tensor:
        return self._fn(out, y_a, y_b, lam)

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine at the start of every (0-based) epoch."""
        if self._drw is not None and hasattr(self.loss, "set_class_weight"):
            start, weight = self._drw
            self.loss.set_class_weight(weight if epoch >= start else None)

    def to(self, device: torch.device) -> Criterion:
        self.loss.to(device)
        if self._drw is not None:
            self._drw = (self._drw[0], self._drw[1].to(device))
        return self


def build_criterion(cfg: Config, network: Network, class_counts: Sequence[int]) -> Criterion:
    """The training loss named in ``cfg.loss``, bound to ``network``'s head."""
    from . import losses

    lc = cfg.loss
    counts = list(class_counts)
    name = lc.name
    if name == "dr":
        head = network.head
        loss = losses.DotRegressionLoss(balance=lc.balance, reg_lam=lc.reg_lam, class_counts=counts)
        return Criterion(
            lambda out, ya, yb, lam: loss(out.features, ya, head.frame, yb, lam),
            uses="features",
            loss=loss,
        )
    if name == "ce":
        loss = losses.MixupCrossEntropy()
    elif name == "la":
        loss = losses.LogitAdjustedLoss(counts, tau=lc.tau)
    elif name == "bs":
        loss = losses.BalancedSoftmaxLoss(counts)
    elif name == "focal":
        loss = losses.FocalLoss(gamma=lc.focal_gamma)
    elif name == "ldam":
        loss = losses.LDAMLoss(counts, max_margin=lc.ldam_max_margin, scale=lc.ldam_scale)
    elif name == "allnc":
        raise ConfigError(
            "loss.name=allnc is trained by the AllNC objective; it is built by the engine"
        )
    else:  # pragma: no cover - validated by the config
        raise ConfigError(f"unknown loss.name '{name}'")
    drw = None
    start = drw_start(cfg)
    if start is not None:
        drw = (start, losses.drw_weights(counts, beta=lc.drw_beta))
    return Criterion(
        lambda out, ya, yb, lam: loss(out.logits, ya, yb, lam), uses="logits", loss=loss, drw=drw
    )
