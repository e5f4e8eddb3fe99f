"""The training engine: loop, schedule, mixup, checkpoints, run directory, logging."""

from .loop import Trainer, resolve_device
from .rundir import RunDir, read_metrics
from .schedule import lr_at_epoch

__all__ = ["RunDir", "Trainer", "lr_at_epoch", "read_metrics", "resolve_device"]
