"""Backbones: a registry of feature extractors ``(B, C, H, W) -> (B, out_features)``.

Built in: ``digits_cnn``, ``mlp``, ``resnet20``/``resnet32``/``resnet44``/``resnet56``/``resnet110``
(CIFAR ResNets, option-A shortcuts, SPEC section 5).
"""

from __future__ import annotations

from . import resnet as _resnet  # noqa: F401  (registers the ResNets)
from . import small as _small  # noqa: F401  (registers digits_cnn, mlp)
from .registry import BACKBONES, build_backbone, register_backbone
from .resnet import BasicBlock, CifarResNet
from .small import MLP, DigitsCNN

__all__ = [
    "BACKBONES",
    "MLP",
    "BasicBlock",
    "CifarResNet",
    "DigitsCNN",
    "build_backbone",
    "register_backbone",
]
