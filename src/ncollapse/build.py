"""From a config to the objects the engine runs: the network, the criterion, the augmentation
and the evaluator. Every head, loss and backbone is created by name from its registry; nothing
here knows one method from another.
"""

from __future__ import annotations

import os
import warnings
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

__all__ = [
    "Network",
    "available_memory",
    "build_augment",
    "build_criterion",
    "build_evaluator",
    "build_network",
    "check_network_fits",
]


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


#: copies of the weights training holds in float32: weights, gradients, momentum, average
TRAINING_COPIES = 4


def available_memory() -> int:
    """Bytes of memory this process can still take (``MemAvailable``; the physical memory where
    the kernel does not say)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: assume it fits


def _size(n: float, unit: str = "") -> str:
    """``1.5e15`` -> ``1.5 PB`` (with ``unit="B"``) or ``1.5 quadrillion``."""
    words = {"P": "quadrillion", "T": "trillion", "G": "billion", "M": "million", "k": "thousand"}
    for scale, name in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {name}{unit}" if unit else f"{n / scale:.3g} {words[name]}"
    return f"{n:.0f} {unit}".rstrip()


def _parameters_on_meta(name: str, in_channels: int, width: int, num_classes: int) -> int:
    """How many values the backbone and a ``(d, K)`` classifier hold, laid out on the meta
    device (nothing allocated)."""
    with torch.device("meta"):
        backbone = build_backbone(name, in_channels=in_channels, width=width)
    n = sum(t.numel() for t in (*backbone.parameters(), *backbone.buffers()))
    return n + int(backbone.out_features) * num_classes


def check_network_fits(cfg: Config, num_classes: int, in_channels: int) -> None:
    """Refuse, before anything is allocated, a network whose weights cannot fit in this
    machine's memory (``model.width`` far too large): its size is counted on the meta device."""
    m = cfg.model
    try:
        n = _parameters_on_meta(m.backbone, in_channels, m.width, num_classes)
    except (RuntimeError, OverflowError):  # sizes beyond what a tensor can describe
        n = None
    except Exception:  # any other mistake is reported by the real build
        return
    need = None if n is None else TRAINING_COPIES * 4 * n
    free = available_memory()
    if need is not None and need <= free:
        return
    small = _parameters_on_meta(m.backbone, in_channels, 1, num_classes)
    what = (
        "more values than a tensor can hold"
        if n is None
        else f"{_size(n)} parameters: training needs about {_size(need, 'B')} (weights, "
        f"gradients, momentum and average in float32), more than the {_size(free, 'B')} of "
        "memory free here"
    )
    raise ConfigError(
        f"model.width={m.width} gives the {m.backbone} backbone {what}: lower model.width (1 "
        f"gives {_size(small)} parameters)"
    )


def build_network(cfg: Config, num_classes: int, in_channels: int) -> Network:
    """The backbone and head named in ``cfg.model``; a head that cannot exist (an ETF wider than
    the feature) raises a :class:`ConfigError` that names the width option, and so does a
    network too large for this machine's memory (before anything is allocated)."""
    m = cfg.model
    if m.grow_width and m.pretrained:
        raise ConfigError(
            "model.grow_width widens the backbone, so pretrained weights (model.pretrained) "
            "would not fit it; set model.grow_width=false (and a model.width whose feature has "
            f"at least {num_classes - 1} dimensions for {num_classes} classes)"
        )
    check_network_fits(cfg, num_classes, in_channels)
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
    when ``loss.posthoc_tau`` is set); flip TTA on a run trained without flips is warned about."""
    kind = cfg.data.augment if cfg.data.augment != "auto" else bundle.augment
    if cfg.eval.tta and kind == "none":
        data = bundle.info.get("name", cfg.data.name)
        how = "data.augment=none" + (
            f", the default for {data}" if cfg.data.augment == "auto" else ""
        )
        warnings.warn(
            "flip TTA (--tta, eval.tta) averages each image with its mirror image, but this run "
            f"trains without flips ({how}): the network has never seen mirrored images and the "
            "accuracy usually drops; measure without TTA, or train with data.augment=standard",
            stacklevel=2,
        )
    transform = None
    if cfg.loss.posthoc_tau is not None:
        transform = partial(
            posthoc_logit_adjust, class_counts=bundle.class_counts, tau=cfg.loss.posthoc_tau
        )
    return Evaluator(bundle.class_counts, logit_transform=transform)
