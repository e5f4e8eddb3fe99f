"""From a config to the objects the engine runs: the network, the criterion, the augmentation
and the evaluator. Every head, loss and backbone is created by name from its registry; nothing
here knows one method from another.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

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
    try:
        backbone = build_backbone(
            m.backbone, in_channels=in_channels, width=m.width, pretrained=m.pretrained
        )
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
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
