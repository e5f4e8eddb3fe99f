"""How much a convolution's float32 weight gradient depends on how the batch is split.

Two data-parallel processes compute the first convolution's weight gradient on half the batch
each and add the halves; one process computes it on the whole batch. Mathematically the same,
in float32 the two sum ~N x H x W products in another order, and which order the CPU kernel uses
depends on the minibatch size (and on the machine). Where the gradient is a small difference of
large terms (BatchNorm makes each channel's incoming gradient sum to zero), that rounding is a
visible share of it. This script measures it on the machine it runs on, against float64: the
whole batch's error, the two halves' error, and the two against each other, each relative to the
gradient's largest entry.

tests/test_distributed_torchrun.py allows cross-entropy's two-process run a larger difference
than ETF + DR's for this reason (docs/distributed.md, "How close to one process").

    python benchmarks/conv_grad_order.py
    python benchmarks/conv_grad_order.py --batch 128 412 --threads 1
"""

from __future__ import annotations

import argparse

import torch

from ncollapse.engine.precision import cpu_flags
from ncollapse.provenance import cpu_info


def weight_grad(x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor, dtype) -> torch.Tensor:
    """d(sum(conv(x, w) * dy))/dw, computed in ``dtype``, returned in float64."""
    w = w.to(dtype).clone().requires_grad_(True)
    torch.nn.functional.conv2d(x.to(dtype), w, padding=1).backward(dy.to(dtype))
    return w.grad.double()


def measure(batch: int, seed: int = 0) -> dict[str, float]:
    """A 3 -> 16 channel 3x3 convolution on 32x32 inputs, as a CIFAR network's first layer, with
    an incoming gradient centred per channel (as BatchNorm's backward leaves it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    w = 0.3 * torch.randn(16, 3, 3, 3, generator=g)
    dy = torch.randn(batch, 16, 32, 32, generator=g)
    dy = dy - dy.mean(dim=(0, 2, 3), keepdim=True)
    exact = weight_grad(x, w, dy, torch.float64)
    whole = weight_grad(x, w, dy, torch.float32)
    h = batch // 2
    halves = weight_grad(x[:h], w, dy[:h], torch.float32)
    halves = halves + weight_grad(x[h:], w, dy[h:], torch.float32)
    scale = exact.abs().max().item()
    return {
        "whole": (whole - exact).abs().max().item() / scale,
        "halves": (halves - exact).abs().max().item() / scale,
        "whole_vs_halves": (whole - halves).abs().max().item() / scale,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[128, 412], help="whole batch sizes")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if any(b < 2 for b in args.batch) or args.threads < 1:
        p.error("--batch takes sizes of 2 or more, --threads 1 or more")
    torch.set_num_threads(args.threads)
    bf16 = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()) or ["none"]
    print(f"CPU {cpu_info().get('model')} (bf16 features: {', '.join(bf16)}), "
          f"{args.threads} thread(s), torch {torch.__version__}")  # fmt: skip
    print("errors relative to the gradient's largest entry (float64 is the reference)")
    print(f"{'batch':>6} {'whole batch':>12} {'two halves':>12} {'whole vs halves':>16}")
    for b in args.batch:
        r = measure(b)
        print(f"{b:>6} {r['whole']:>12.1e} {r['halves']:>12.1e} {r['whole_vs_halves']:>16.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
