"""From a config to the objects the engine runs: the network, the criterion, the augmentation
and the evaluator. Every head, loss and backbone is created by name from its registry; nothing
here knows one method from another.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from .config import Config
from .criterion import Criterion
from .data.augment import BatchAugment, make_augment
from .data.base import DataBundle
from .engine.evaluate import Evaluator
from .errors import ConfigError
from .heads import HeadOutput, build_head_from_config
from .losses import LossContext, posthoc_logit_adjust
from .losses import build_criterion as _build_criterion
from .models import build_backbone

__all__ = ["Network", "build_augment", "build_criterion", "build_evaluator", "build_network"]


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
    if m.grow_width and m.pretrained:
        raise ConfigError(
            "model.grow_width widens the backbone, so pretrained weights (model.pretrained) "
            "would not fit it; set model.grow_width=false (and a model.width whose feature has "
            f"at least {num_classes - 1} dimensions for {num_classes} classes)"
        )
    backbone = _backbone(m, in_channels, m.width)
    d = backbone.out_features
    if m.grow_width and d < num_classes - 1:
        backbone = _widened(m, in_channels, num_classes, backbone)
        d = backbone.out_features
    try:
        head = build_head_from_config(m, d, num_classes)
    except ConfigError:
        raise
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


def _backbone(m: Any, in_channels: int, width: int) -> nn.Module:
    try:
        return build_backbone(
            m.backbone, in_channels=in_channels, width=width, pretrained=m.pretrained
        )
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None


#: the widest backbone ``model.grow_width`` builds (a feature of 64 x 64 = 4,096 dimensions on the
#: CIFAR-type backbones: an ETF for 4,097 classes)
MAX_WIDTH = 64


def _widened(m: Any, in_channels: int, num_classes: int, backbone: nn.Module) -> nn.Module:
    """``model.grow_width``: the backbone at the smallest width from ``model.width`` up whose
    feature has at least K - 1 dimensions (what a simplex ETF of K vertices needs)."""
    width, d = m.width, backbone.out_features
    # the CIFAR-type backbones' feature grows in proportion to the width: start from that guess
    width = max(width + 1, -(-(num_classes - 1) * width // max(d, 1)))
    while width <= MAX_WIDTH:
        backbone = _backbone(m, in_channels, width)
        if backbone.out_features >= num_classes - 1:
            backbone.grown = (
                f"model.grow_width: {m.backbone} at width {width} (a "
                f"{backbone.out_features}-dimensional feature for {num_classes} classes; "
                f"model.width={m.width} gives {d})"
            )
            return backbone
        if backbone.out_features <= d:
            break  # the width does not change this backbone's feature
        width += 1
    raise ConfigError(
        f"model.grow_width: the {m.backbone} backbone has no width up to {MAX_WIDTH} with a "
        f"feature of {num_classes - 1} dimensions for {num_classes} classes; choose a wider "
        "backbone (model.backbone)"
    )


def build_criterion(
    cfg: Config,
    network: Network,
    class_counts: Sequence[int],
    train_labels: torch.Tensor | None = None,
) -> Criterion:
    """The training loss ``cfg.loss.name`` names, bound to ``network`` (its registered builder
    gets the config, the network, the class counts and the training labels)."""
    if train_labels is None:
        train_labels = torch.repeat_interleave(
            torch.arange(len(class_counts)), torch.as_tensor(list(class_counts))
        )
    ctx = LossContext(cfg, network, list(class_counts), train_labels)
    return _build_criterion(ctx)


def build_augment(cfg: Config, bundle: DataBundle) -> BatchAugment:
    """The training augmentation: ``data.augment``, or the dataset's default for ``auto``."""
    kind = cfg.data.augment if cfg.data.augment != "auto" else bundle.augment
    return make_augment(kind, bundle.mean, bundle.std)


def build_evaluator(cfg: Config, bundle: DataBundle) -> Evaluator:
    """Accuracy and collapse measurement for this run (post-hoc logit adjustment at evaluation
    when ``loss.posthoc_tau`` is set)."""
    transform = None
    if cfg.loss.posthoc_tau is not None:
        transform = partial(
            posthoc_logit_adjust, class_counts=bundle.class_counts, tau=cfg.loss.posthoc_tau
        )
    return Evaluator(bundle.class_counts, logit_transform=transform)
