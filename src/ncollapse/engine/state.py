"""What a training run carries between epochs and across a resume: the device choice, the
per-epoch random generators, and the trainer's counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError

__all__ = ["TrainState", "epoch_generators", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "run.device=cuda was asked for but no CUDA device is available; use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def epoch_generators(seed: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """The CPU torch generator and NumPy generator of one epoch, derived from the seed alone, so
    that a run resumed at epoch ``e`` draws exactly what the uninterrupted run drew."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + int(epoch) + 1)
    return g, np.random.default_rng([int(seed), int(epoch)])


@dataclass
class TrainState:
    """What a checkpoint restores besides the weights."""

    epoch: int = 0  # epochs completed
    best_acc: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0  # training steps only
    wall_seconds: float = 0.0  # whole epochs: training, evaluation and collapse metrics
    first_loss: float | None = None  # the first epoch's mean loss (to warn of a blow-up)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
            "first_loss": self.first_loss,
        }

    def load(self, epoch: int, t: dict[str, Any]) -> None:
        self.epoch = int(epoch)
        self.best_acc = float(t["best_acc"])
        self.best_epoch = int(t["best_epoch"])
        self.train_seconds = float(t["train_seconds"])
        self.wall_seconds = float(t.get("wall_seconds", 0.0))  # absent from older checkpoints
        self.first_loss = t.get("first_loss")
