"""BatchNorm over the global batch of a data-parallel run (``run.sync_bn``).

On CUDA this is PyTorch's :class:`torch.nn.SyncBatchNorm`. PyTorch's runs on GPUs only, so on
the CPU (the gloo backend) :class:`GlobalBatchNorm` does the same: in training mode the
per-channel mean and variance are taken over every rank's samples (two all-reduces, the variance
of the deviations from the global mean, as one process computes it), with the gradient flowing
through the reductions; in eval mode it is an ordinary BatchNorm. Both keep the parameter and
buffer names of the BatchNorm they replace, so checkpoints and ``model.pt`` load into a plain
network.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GlobalBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks; its gradient is the sum over ranks of the gradients (every rank's
    loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        tdist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone().contiguous()
        tdist.all_reduce(out)
        return out


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover all ranks' samples (any input rank >= 2)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input with a channel dimension, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=x32.dtype, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x32.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x32 - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else float(self.momentum)
                )
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm computing global-batch statistics: PyTorch's
    SyncBatchNorm on CUDA, :class:`GlobalBatchNorm` elsewhere (same parameters and buffers)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        out = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
