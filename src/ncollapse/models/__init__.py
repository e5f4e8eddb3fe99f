"""Backbones: a registry of feature extractors ``(B, C, H, W) -> (B, out_features)``.

Built in: ``digits_cnn``, ``mlp``, ``resnet20``/``resnet32``/``resnet44``/``resnet56``/``resnet110``
(CIFAR ResNets, option-A shortcuts), ``fastnet`` (short schedules), ``resnet50`` (2048-d) and ``resnet50_4096`` (last stage
1024 planes, 4096-d: the ImageNet-LT recipe), with torchvision key names so that a local
torchvision weight file loads (``build_backbone(name, pretrained=path)``).
"""

from __future__ import annotations

from . import fast as _fast  # noqa: F401  (registers fastnet)
from . import resnet as _resnet  # noqa: F401  (registers the ResNets)
from . import resnet50 as _resnet50  # noqa: F401  (registers resnet50, resnet50_4096)
from . import small as _small  # noqa: F401  (registers digits_cnn, mlp)
from .fast import FastNet
from .pretrained import load_pretrained
from .registry import BACKBONES, build_backbone, register_backbone
from .resnet import BasicBlock, CifarResNet
from .resnet50 import Bottleneck, ResNet50
from .small import MLP, DigitsCNN

__all__ = [
    "BACKBONES",
    "MLP",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "DigitsCNN",
    "FastNet",
    "ResNet50",
    "build_backbone",
    "load_pretrained",
    "register_backbone",
]
