"""Classifier heads: what sits after the backbone's pooled feature ``f`` (docs/method.md).

Every head maps ``f`` of shape ``(B, d)`` to a :class:`HeadOutput` ``(features, logits)`` and has
``classifier_weight() -> (K, d)`` (see ``docs/architecture.md``, "Heads").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import INF, Config, Option, option, seed_option
from .geometry import simplex_etf
from .registry import Registry

__all__ = [
    "FEATURE_NORMS",
    "HEADS",
    "HEAD_INITS",
    "CosineHead",
    "ETFHead",
    "HeadEntry",
    "HeadOutput",
    "LinearHead",
    "build_head",
    "build_head_from_config",
    "register_head",
]

FEATURE_NORMS: tuple[str, ...] = ("bn_l2", "bn", "none")
HEAD_INITS: tuple[str, ...] = ("default", "kaiming_normal")  # LinearHead's ``init``


class HeadOutput(NamedTuple):
    """What a head returns.

    ``features``: the vectors the classifier multiplies, ``(B, d)`` (ETF head: ``h =
    normalise(BN(f))``; cosine head: ``f / ||f||``; linear heads: the pooled feature ``f``
    itself). Neural-collapse metrics
    and the dot-regression loss use these.
    ``logits``: ``(B, K)``.
    """

    features: Tensor
    logits: Tensor


class ETFHead(nn.Module):
    """A fixed simplex-ETF classifier: ``logits = scale * h @ frame`` with ``h = norm(f)``.

    Args:
        in_features: feature dimension ``d`` (must be ``>= num_classes - 1``; otherwise the
            ``ValueError`` of :func:`~ncollapse.geometry.simplex_etf` propagates).
        num_classes: ``K``.
        feature_norm: ``"bn_l2"`` (official, CIFAR-type data): ``BatchNorm1d(d)`` with affine
            parameters, then division by ``max(||x||, 1e-8)``; ``"bn"`` (official, ImageNet):
            BatchNorm only; ``"none"``: identity.
        scale: logit scale ``s``. The default 1.0 is the official value; it cripples
            cross-entropy with a fixed ETF (cosines in [-1, 1] cannot make a confident
            softmax): use e.g. ``scale=10`` or more for CE on the ETF head. The dot-regression
            loss of a config acts on the scaled feature ``s h`` and so grows with ``s`` too
            (``DR(s h) = s DR(h)``): one temperature for either loss (docs/method.md).
        seed: seed of the frame (kept apart from the training seed).

    The frame ``M`` is a ``(d, K)`` persistent buffer ``frame``: it takes no gradient, no
    optimiser (or weight decay) ever sees it, and it is saved in the ``state_dict``, so a
    reloaded head predicts exactly as before.
    """

    frame: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        feature_norm: str = "bn_l2",
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(
                f"unknown feature_norm {feature_norm!r}; valid: {', '.join(FEATURE_NORMS)}"
            )
        frame = simplex_etf(in_features, num_classes, seed=seed)
        self.in_features = in_features
        self.num_classes = num_classes
        self.feature_norm = feature_norm
        self.scale = float(scale)
        self.seed = seed
        self.bn: nn.Module = (
            nn.BatchNorm1d(in_features, affine=True)
            if feature_norm in ("bn_l2", "bn")
            else nn.Identity()
        )
        self.register_buffer("frame", frame, persistent=True)

    def normalise(self, f: Tensor) -> Tensor:
        """The head's feature transform ``h = norm(f)`` (without the classifier)."""
        h = self.bn(f)
        if self.feature_norm == "bn_l2":
            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return h

    def forward(self, f: Tensor) -> HeadOutput:
        """``f`` (B, d) -> ``HeadOutput(h, scale * h @ frame)``."""
        h = self.normalise(f)
        return HeadOutput(h, self.scale * (h @ self.frame.to(h.dtype)))

    def classifier_weight(self) -> Tensor:
        """The class vectors as rows, ``frame.T`` of shape (K, d), *without* the logit scale."""
        return self.frame.T

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"feature_norm={self.feature_norm!r}, scale={self.scale:g}, seed={self.seed}"
        )


class LinearHead(nn.Module):
    """A linear classifier ``logits = W f + b``; ``features`` is ``f`` itself.

    Args:
        in_features: ``d``.
        num_classes: ``K``.
        bias: whether the layer has a bias.
        frozen: if True, weight and bias get ``requires_grad=False`` and stay at their random
            initialisation. This reproduces, as a named option (head ``linear-frozen``), a bug
            of the official CIFAR ResNet baseline of Yang et al., whose "learnable" classifier
            is in fact never trained. Use ``frozen=False`` (head ``linear``) for a real baseline.
        init: ``"default"`` (PyTorch's ``nn.Linear`` initialisation, uniform with bound
            ``1/sqrt(d)``) or ``"kaiming_normal"`` (normal with std ``sqrt(2/d)``, what the
            released CIFAR code of LDAM and of Yang et al. applies to its classifier; the bias
            keeps PyTorch's).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = True,
        frozen: bool = False,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, bias=bias)
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(self.linear.weight)
        elif init not in HEAD_INITS:
            raise ValueError(f"unknown head init {init!r}; valid: {', '.join(HEAD_INITS)}")
        self.frozen = bool(frozen)
        if frozen:
            for p in self.linear.parameters():
                p.requires_grad_(False)

    def forward(self, f: Tensor) -> HeadOutput:
        """``f`` (B, d) -> ``HeadOutput(f, W f + b)``."""
        return HeadOutput(f, self.linear(f))

    def classifier_weight(self) -> Tensor:
        """The weight ``W`` of shape (K, d) (the bias is not included)."""
        return self.linear.weight


class CosineHead(nn.Module):
    """A learnable cosine classifier: ``logits = scale * cos(f, w_k)``, i.e. the unit-normalised
    feature times the matrix of unit-normalised class vectors (no bias).

    This is the "normed linear" layer that LDAM (Cao et al., 2019) is defined on: its margins
    (at most 0.5) and logit scale (30) are sized for logits in [-1, 1]. On an ordinary linear
    layer the same constants act on logits of any size and training fails (the ``ldam_drw``
    preset therefore uses this head).

    Args:
        in_features: ``d``.
        num_classes: ``K``.
        scale: logit scale ``s`` (1.0 leaves the cosines as they are; a loss with its own scale,
            like LDAM, wants 1.0; cross-entropy on this head needs ``s`` of 10 or more).

    ``features`` of the output is ``f / ||f||`` (what the class vectors multiply), and
    :meth:`classifier_weight` returns the unit-normalised rows, so neural-collapse metrics see
    the classifier that actually acts.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"the cosine head needs scale > 0, got {scale}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation

    def forward(self, f: Tensor) -> HeadOutput:
        """``f`` (B, d) -> ``HeadOutput(f/||f||, scale * f/||f|| @ (W/||W||)^T)``."""
        h = F.normalize(f, dim=1, eps=1e-8)
        w = F.normalize(self.weight, dim=1, eps=1e-8).to(h.dtype)
        return HeadOutput(h, self.scale * (h @ w.T))

    def classifier_weight(self) -> Tensor:
        """The unit-normalised class vectors as rows, shape (K, d), without the scale."""
        return F.normalize(self.weight, dim=1, eps=1e-8)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale:g}"
        )


@dataclass
class HeadEntry:
    """A registered head: its class, fixed keyword arguments, and which ``model.*`` options it
    takes from a config (``options(model_cfg) -> kwargs``)."""

    cls: Callable[..., nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)
    options: Callable[[Any], dict[str, Any]] = lambda m: {}


#: head name (``model.head``) -> :class:`HeadEntry`
HEADS: Registry[HeadEntry] = Registry("head", "model.head", config=Config)


def register_head(
    name: str,
    cls: Callable[..., nn.Module],
    *,
    options: Callable[[Any], dict[str, Any]] | None = None,
    keys: dict[str, Option] | None = None,
    default: bool = False,
    **fixed: Any,
) -> None:
    """Register ``cls(in_features, num_classes, **fixed, **options(model_cfg))`` as head
    ``name``. The module must return a :class:`HeadOutput` and have ``classifier_weight()``.
    ``keys``: the config keys the head reads (``{"model.hidden": option(16, "...")}``), added to
    the config; ``default``: the head of a config that names none."""
    HEADS.register(
        name, HeadEntry(cls, fixed, options or (lambda m: {})), options=keys, default=default
    )


#: the config keys of the built-in heads
_SCALE = option(
    1.0, "logit scale s (logits = s M^T h); the DR loss is computed on s h", range=(0, INF, "()")
)
_INIT = option(
    "default",
    "default: PyTorch's nn.Linear initialisation; kaiming_normal: the released CIFAR code's",
    choices=HEAD_INITS,
)
_ETF = {
    "model.feature_norm": option(
        "bn_l2",
        "the feature normalisation before the frame: BatchNorm and L2 (bn_l2), BatchNorm alone, none",
        choices=FEATURE_NORMS,
    ),
    "model.scale": _SCALE,
    "model.etf_seed": seed_option("seed of the fixed frame (kept apart from `seed`)"),
}

register_head(
    "linear", LinearHead, options=lambda m: {"init": m.head_init}, keys={"model.head_init": _INIT}
)
register_head(
    "linear-frozen",
    LinearHead,
    frozen=True,
    options=lambda m: {"init": m.head_init},
    keys={"model.head_init": _INIT},
)
register_head(
    "cosine", CosineHead, options=lambda m: {"scale": m.scale}, keys={"model.scale": _SCALE}
)
register_head(
    "etf",
    ETFHead,
    options=lambda m: {"feature_norm": m.feature_norm, "scale": m.scale, "seed": m.etf_seed},
    keys=_ETF,
    default=True,
)


def build_head(name: str, in_features: int, num_classes: int, **kw: Any) -> nn.Module:
    """Build a head by name (``"linear"``, ``"linear-frozen"``, ``"cosine"``, ``"etf"`` or one
    registered with :func:`register_head`); keyword arguments go to its constructor
    (``ETFHead``: ``feature_norm``, ``scale``, ``seed``; ``CosineHead``: ``scale``;
    ``LinearHead``: ``bias``). An unknown name raises a ConfigError naming the closest one."""
    entry = HEADS.get(name)
    return entry.cls(in_features, num_classes, **entry.fixed, **kw)


def build_head_from_config(model: Any, in_features: int, num_classes: int) -> nn.Module:
    """The head ``model.head`` names, with the ``model.*`` options it takes."""
    entry = HEADS.get(model.head)
    return entry.cls(in_features, num_classes, **entry.fixed, **entry.options(model))
