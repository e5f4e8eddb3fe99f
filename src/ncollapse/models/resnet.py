"""CIFAR ResNets of He et al. (2016), section 4.2: ResNet-20/32/44/56 with option-A shortcuts.

3x3 conv (16w) -> three stages of ``n = (depth - 2) / 6`` basic blocks at widths 16w/32w/64w
(strides 1/2/2) -> global average pooling. Option-A shortcuts are parameter-free: stride-2
subsampling ``x[:, :, ::2, ::2]`` plus zero channel padding. Kaiming-normal init as in the
official LDAM/DR code. ``forward`` returns the pooled feature (B, 64w); no classifier here.
ResNet-32 at width 1: 464,154 parameters with a 10-way fc, 463,504 without (the 0.46M of the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_backbone

__all__ = ["BasicBlock", "CifarResNet"]


class _ShortcutA(nn.Module):
    """Option A: subsample by 2 and pad the new channels with zeros (no parameters)."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra  # channels added on each side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra, self.extra))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ValueError("option-A shortcut needs stride 2 and doubled channels")
            self.shortcut = _ShortcutA(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet (depth 6n + 2) returning the globally pooled feature of size ``64 * width``."""

    def __init__(self, depth: int = 32, in_channels: int = 3, width: int = 1) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, ...), got {depth}"
            )
        n = (depth - 2) // 6
        w = (16 * width, 32 * width, 64 * width)
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.in_planes = w[0]
        self.layer1 = self._make_layer(w[0], n, 1)
        self.layer2 = self._make_layer(w[1], n, 2)
        self.layer3 = self._make_layer(w[2], n, 2)
        self.out_features = w[2]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _factory(depth: int):
    def make(in_channels: int = 3, width: int = 1) -> CifarResNet:
        return CifarResNet(depth, in_channels, width)

    make.__name__ = f"resnet{depth}"
    make.__doc__ = f"CIFAR ResNet-{depth} (option-A shortcuts), feature 64 * width."
    return make


for _d in (20, 32, 44, 56, 110):
    # ResNet-32 is the backbone of the official CIFAR-LT recipe, the config's default
    register_backbone(f"resnet{_d}", default=_d == 32)(_factory(_d))
