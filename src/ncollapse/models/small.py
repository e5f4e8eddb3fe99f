"""Small backbones for the embedded digits data: a compact CNN and an MLP."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_backbone

__all__ = ["MLP", "DigitsCNN"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DigitsCNN(nn.Module):
    """conv-BN-ReLU (32w) -> conv-BN-ReLU (32w) -> max-pool 2 -> conv-BN-ReLU (64w) x 2 -> global
    average pool; feature dimension ``64 * width``. About 65k parameters at width 1; works on any
    input size >= 2 (built for 1 x 8 x 8 digits)."""

    def __init__(self, in_channels: int = 1, width: int = 1) -> None:
        super().__init__()
        c1, c2 = 32 * width, 64 * width
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, c1),
            _conv_bn_relu(c1, c1),
            nn.MaxPool2d(2),
            _conv_bn_relu(c1, c2),
            _conv_bn_relu(c2, c2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = c2
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MLP(nn.Module):
    """Flatten -> Linear(input_size, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU.

    ``hidden = hidden_size * width``; the feature is the last hidden layer.
    """

    def __init__(self, input_size: int, hidden_size: int = 256, width: int = 1) -> None:
        super().__init__()
        h = hidden_size * width
        self.input_size = input_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(input_size, h),
            nn.ReLU(inplace=True),
            nn.Linear(h, h),
            nn.ReLU(inplace=True),
        )
        self.out_features = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.input_size:
            raise ValueError(
                f"mlp built for inputs of {self.input_size} values, got {tuple(x.shape[1:])}; "
                "pass input_size= (or image_size=) to build_backbone"
            )
        return self.net(x)


@register_backbone("digits_cnn")
def digits_cnn(in_channels: int = 1, width: int = 1) -> DigitsCNN:
    return DigitsCNN(in_channels, width)


@register_backbone("mlp")
def mlp(
    in_channels: int = 1,
    width: int = 1,
    input_size: int | None = None,
    image_size: int | tuple[int, int] = 8,
    hidden_size: int = 256,
) -> MLP:
    """``input_size`` defaults to ``in_channels * H * W`` from ``image_size`` (8 for digits)."""
    if input_size is None:
        hh, ww = (image_size, image_size) if isinstance(image_size, int) else image_size
        input_size = in_channels * int(hh) * int(ww)
    return MLP(int(input_size), hidden_size, width)
