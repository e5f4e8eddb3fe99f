"""The training engine: loop, evaluation, schedule, mixup, progress and TensorBoard logging."""

from .evaluate import Evaluator
from .loop import Trainer, resolve_device
from .schedule import lr_at_epoch

__all__ = ["Evaluator", "Trainer", "lr_at_epoch", "resolve_device"]
