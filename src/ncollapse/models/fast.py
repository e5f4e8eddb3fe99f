"""A small, wide, shallow network for short schedules on 32x32 images (``fastnet``).

The design follows the CIFAR-10 speed-run networks (Jordan, "airbench", 2024; Page's "How to
train your ResNet", 2018): a 2x2 stem convolution, then three groups of
``conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` at widths
``(16, 64, 64) * width`` (``width=4``: the 64/256/256 of the speed runs; ``width=2``: 32/128/128,
about the parameter count of ResNet-32 with a third of its depth), and a global max-pool. Wide,
shallow convolutions keep a CPU's vector units busy where ResNet-32's 16-channel layers cannot,
and few layers learn fast: the network is meant for schedules of tens of epochs. No residual
connections; BatchNorm scales are learnable (the ETF head's own BN follows the pooled feature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_backbone

__all__ = ["FastNet"]


class _Group(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.gelu(self.bn1(x))
        return F.gelu(self.bn2(self.conv2(x)))


class FastNet(nn.Module):
    """``(B, C, H, W) -> (B, 64 * width)``: stem, three conv groups, global max-pool."""

    def __init__(self, in_channels: int = 3, width: int = 2) -> None:
        super().__init__()
        w = (16 * width, 64 * width, 64 * width)
        stem = 8 * in_channels  # the speed runs' 2x2 whitening stem has 2 * C * 2 * 2 channels
        self.stem = nn.Conv2d(in_channels, stem, 2, bias=True)
        self.groups = nn.Sequential(_Group(stem, w[0]), _Group(w[0], w[1]), _Group(w[1], w[2]))
        self.out_features = w[2]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.stem(x))
        return torch.amax(self.groups(x), dim=(2, 3))


@register_backbone("fastnet")
def fastnet(in_channels: int = 3, width: int = 2) -> FastNet:
    """The short-schedule network (widths 16/64/64 x ``width``; default 32/128/128)."""
    return FastNet(in_channels, width)
