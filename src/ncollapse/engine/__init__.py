"""The training engine: loop, evaluation, schedules, precision, weight averaging, mixup,
progress and TensorBoard logging."""

from .evaluate import Evaluator
from .loop import Trainer
from .schedule import lr_at, lr_at_epoch
from .state import resolve_device

__all__ = ["Evaluator", "Trainer", "lr_at", "lr_at_epoch", "resolve_device"]
