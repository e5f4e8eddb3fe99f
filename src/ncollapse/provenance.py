"""What a run directory records about where and on what a run trained: ``env.json`` (versions,
device, CPU, threads, precision, command line, and one entry per resume) and ``data.json``
(class names and counts, the seeds). Results depend on the CPU, the thread count and the
precision (``docs/threads.md``), so every run keeps them beside its numbers."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

import torch

from . import __version__
from .config import Config
from .data.base import DataBundle
from .engine.distributed import SINGLE, Distributed
from .engine.precision import autocast_dtype, cpu_flags, precision_name
from .inference import preprocess_record

__all__ = ["cpu_info", "data_record", "env_record", "resume_record"]


def cpu_info() -> dict[str, Any]:
    """The CPU a run used: model name, the instruction-set features its speed and its rounding
    depend on, and the kernels PyTorch picked. Training on another CPU gives other numbers."""
    model, flags = platform.processor() or None, cpu_flags()
    if model in (None, "", "x86_64"):
        try:
            with open("/proc/cpuinfo") as fh:
                model = next(
                    (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                    model,
                )
        except OSError:
            pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return {
        "model": model,
        "features": [f for f in wanted if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
    }


def env_record(
    device: torch.device, amp: bool = True, dist: Distributed = SINGLE, global_loss: bool = False
) -> dict[str, Any]:
    """``env.json`` of a new run: versions, device, CPU, threads, precision, the command line,
    and for data-parallel training the processes and whether the loss sees the global batch."""
    return {
        **_this_start(device, amp),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "cwd": os.getcwd(),  # relative paths of the config (data.root) are from here
        # data-parallel training: the number of processes and the backend (none: one process)
        "world_size": dist.world_size,
        "backend": dist.backend,
        "loss_batch": None if not dist.enabled else ("global" if global_loss else "local"),
    }


def _this_start(device: torch.device, amp: bool) -> dict[str, Any]:
    """What every start of a run records, the first and each resume: versions, device,
    threads, precision, time and command line."""
    return {
        "ncollapse": __version__,
        "torch": torch.__version__,
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "precision": precision_name(autocast_dtype(device, amp)),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


def resume_record(
    env: dict[str, Any], device: torch.device, amp: bool, position: dict[str, Any]
) -> dict[str, Any]:
    """``env`` with this start appended to its ``resumes``: where training picked up (the epoch,
    and the step within it when stopped midway), on what (threads, device, CPU, precision,
    versions) and when. A run stopped and resumed on other hardware, or with another thread
    count, says so, and a result's wall time can be read against each part."""
    start = {**position, **_this_start(device, amp), "cpu": cpu_info().get("model")}
    before = env.get("resumes")
    return {**env, "resumes": [*(before if isinstance(before, list) else []), start]}


def data_record(cfg: Config, bundle: DataBundle) -> dict[str, Any]:
    """``data.json``: class names and train/test/validation counts, the three seeds, the
    subset information and the preprocessing a loaded model needs."""
    k = len(bundle.class_counts)
    test_counts = torch.bincount(bundle.test.labels, minlength=k).tolist()
    val = getattr(bundle, "val", None)
    return {
        "classes": list(bundle.train.classes),
        "class_counts": list(bundle.class_counts),
        "test_counts": test_counts,
        "num_train": int(bundle.train.labels.numel()),
        "num_test": int(bundle.test.labels.numel()),
        "val_counts": None if val is None else torch.bincount(val.labels, minlength=k).tolist(),
        "seeds": {
            "seed": cfg.seed,
            "subset_seed": cfg.data.subset_seed,
            "etf_seed": cfg.model.etf_seed,
        },
        "info": bundle.info,
        "preprocess": preprocess_record(bundle),  # what ncollapse.load_run needs
    }
