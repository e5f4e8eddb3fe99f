"""The training engine: loop, callbacks (evaluation, checkpoints, logging, the divergence
guard, weight averaging, gradient clipping), optimisers and schedules by name, precision, mixup,
progress and TensorBoard logging."""

from .callbacks import Callback
from .evaluate import Evaluator
from .loop import Trainer
from .optimizers import OPTIMIZERS
from .schedule import SCHEDULES, lr_at, lr_at_epoch
from .state import resolve_device

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "Evaluator",
    "Trainer",
    "lr_at",
    "lr_at_epoch",
    "resolve_device",
]
