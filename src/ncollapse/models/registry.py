"""Backbone registry: ``build_backbone(name, in_channels, width, **kw)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import Config, Option
from ..registry import Registry

__all__ = ["BACKBONES", "build_backbone", "register_backbone"]

Factory = Callable[..., nn.Module]

#: backbone name (``model.backbone``) -> factory
BACKBONES: Registry[Factory] = Registry("backbone", "model.backbone", config=Config)


def register_backbone(
    name: str, *, options: dict[str, Option] | None = None, default: bool = False
) -> Callable[[Factory], Factory]:
    """Decorator: register a factory ``f(in_channels=3, width=1, **kw) -> nn.Module``.

    The module must have ``out_features`` (the pooled feature dimension) and map ``(B, C, H, W)``
    to ``(B, out_features)``. ``options``: ``model.*`` keys only this backbone reads;
    ``default``: the backbone of a config that names none.
    """
    return BACKBONES.register(name, options=options, default=default)  # type: ignore[no-any-return]


def build_backbone(
    name: str,
    in_channels: int = 3,
    width: int = 1,
    pretrained: str | os.PathLike | None = None,
    **kw: Any,
) -> nn.Module:
    """Build a registered backbone; an unknown name raises ValueError listing the valid names.

    ``pretrained``: a local weight file loaded into it (torchvision key names; ``fc.*`` dropped;
    missing/unexpected keys and shape mismatches raise one ConfigError, see
    :mod:`ncollapse.models.pretrained`). What was loaded is in ``model.pretrained_info``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    if int(width) != width or width < 1:
        raise ValueError(f"backbone width multiplier must be a positive integer, got {width!r}")
    model = BACKBONES.get(name)(in_channels=int(in_channels), width=int(width), **kw)
    if not hasattr(model, "out_features"):
        raise TypeError(f"backbone {name!r} has no attribute out_features")
    if pretrained:
        from .pretrained import load_pretrained

        model.pretrained_info = load_pretrained(model, pretrained, name)
    return model
