"""Mixed precision: which autocast dtype a run trains in, on which hardware.

``run.amp`` (default on) asks for mixed precision where the hardware runs it natively:

- CUDA: bf16 where the GPU supports it, else fp16 with a gradient scaler;
- a CPU with bf16 instructions (``avx512_bf16``, or AMX ``amx_bf16``): bf16 autocast, which
  oneDNN runs about 1.6x faster than fp32 in the convolutions of a CIFAR ResNet (measured on an
  AMD Zen 4 core; docs/speed.md);
- any other CPU: fp32. There bf16 would be emulated, slower than fp32.

Evaluation, the collapse statistics and every argmax are computed in float32 regardless.
"""

from __future__ import annotations

import functools
import os

import torch

__all__ = ["autocast_dtype", "cpu_flags", "native_cpu_bf16", "precision_name"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (``NCOLLAPSE_CPU_BF16=0/1`` overrides)."""
    forced = os.environ.get("NCOLLAPSE_CPU_BF16")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype a run on ``device`` trains in (None: float32 throughout)."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and native_cpu_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """How runs record an autocast dtype (:func:`autocast_dtype`): fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
