"""ResNet-50 for ImageNet-type data (He et al. 2016, the "v1.5" form: the stride sits in the 3x3
convolution of a bottleneck), returning the globally pooled feature; no classifier.

``resnet50``: stages of 3/4/6/3 bottlenecks at 64/128/256/512 planes (x4 expansion): a
2048-dimensional feature, 23,508,032 parameters. ``resnet50_4096``: the same with 1024 planes in
the last stage, a 4096-dimensional feature: the backbone of the official ImageNet-LT recipe of
the fixed-ETF paper (Yang et al., 2022). ``width`` multiplies every stage's planes.

Parameter and buffer names are torchvision's (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, each
block ``conv1..3``/``bn1..3``/``downsample.0``/``downsample.1``), so a torchvision ResNet-50
weight file loads with ``build_backbone("resnet50", pretrained="resnet50.pth")`` (its ``fc.*``
entries are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import register_backbone

__all__ = ["Bottleneck", "ResNet50"]


class Bottleneck(nn.Module):
    """1x1 (planes) -> 3x3 (planes, stride) -> 1x1 (4 planes), BN after each, projection
    shortcut (1x1 conv + BN) when the shape changes."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """7x7/2 stem (64 channels), 3x3/2 max-pool, four bottleneck stages, global average pool."""

    def __init__(
        self,
        planes: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (3, 4, 6, 3),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.in_planes = 64
        self.layer1 = self._make_layer(planes[0], blocks[0], 1)
        self.layer2 = self._make_layer(planes[1], blocks[1], 2)
        self.layer3 = self._make_layer(planes[2], blocks[2], 2)
        self.layer4 = self._make_layer(planes[3], blocks[3], 2)
        self.out_features = planes[3] * Bottleneck.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


@register_backbone("resnet50")
def resnet50(in_channels: int = 3, width: int = 1) -> ResNet50:
    """ResNet-50, 2048 * width feature (torchvision key names)."""
    return ResNet50(tuple(p * width for p in (64, 128, 256, 512)), in_channels=in_channels)


@register_backbone("resnet50_4096")
def resnet50_4096(in_channels: int = 3, width: int = 1) -> ResNet50:
    """ResNet-50 with 1024 planes in the last stage: 4096 * width feature (ImageNet-LT recipe)."""
    return ResNet50(tuple(p * width for p in (64, 128, 256, 1024)), in_channels=in_channels)
