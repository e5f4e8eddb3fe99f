"""The trainer's checkpoints: what a resume needs, saved at an epoch boundary or, on a signal,
inside an epoch (after any training step, or before the end-of-epoch evaluation, which a resume
redoes), and read back; :func:`stop_on_signals`, the handler that turns SIGTERM and SIGUSR1 into
such a stop.

:class:`Checkpointing` is a part of :class:`~ncollapse.engine.loop.Trainer`, kept apart so the
loop reads as the loop: it uses the trainer's network, optimiser, scaler, criterion, weight
average, state and run directory. A checkpoint is a dict (``format`` 2):

- ``epoch``: epochs completed; ``model``, ``optimizer``, ``scaler``, ``criterion``, ``ema``: the
  state dicts; ``trainer``: the :class:`~ncollapse.engine.state.TrainState`; ``rng``: the torch,
  NumPy (and CUDA) generator states;
- ``position``, only in a checkpoint saved inside an epoch: the 0-based ``epoch`` in progress,
  ``step`` of its ``steps`` done, each rank's ``loss_sum`` so far and the rest of the epoch's
  partial sums; or, with ``step == steps``, the epoch's train ``record`` (its evaluation is
  redone on resume).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from ..errors import Preempted, UserError

if TYPE_CHECKING:
    from torch import nn

    from ..criterion import Criterion
    from .distributed import Distributed
    from .ema import WeightAverage
    from .state import TrainState

__all__ = ["STOP_SIGNALS", "Checkpointing", "RunFiles", "stop_on_signals"]


class RunFiles(Protocol):
    """What the trainer needs of a run directory (:class:`ncollapse.rundir.Run`)."""

    path: Path
    tensorboard_dir: Path

    def append_metrics(self, record: dict[str, Any]) -> None: ...
    def metrics(self) -> list[dict[str, Any]]: ...
    def save_checkpoint(self, state: dict[str, Any]) -> None: ...
    def save_model(self, state_dict: dict[str, Any]) -> None: ...
    def save_collapse_state(self, source: Any = None, **arrays: Any) -> Any: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...


class Checkpointing:
    """Saving, stopping on a signal, and resuming: the checkpoint half of the trainer."""

    # what it uses of the trainer (set in Trainer.__init__)
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: Criterion
    average: WeightAverage | None
    state: TrainState
    dist: Distributed
    device: torch.device
    batches: Any  # the epoch's training batches (its length: the steps per epoch)
    run_dir: RunFiles | None
    stop_signal: int | None
    last_checkpoint: int
    _position: dict[str, Any] | None

    def _tick(self) -> None:  # the trainer's: brings state.wall_seconds up to now
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, at an epoch boundary (``epoch``: epochs completed). A
        checkpoint saved inside an epoch (:meth:`request_stop`) adds ``position``: the epoch in
        progress, the steps done, and the partial sums of its train record."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}  # noqa: NPY002
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        self._tick()
        return {
            "format": 2,
            "epoch": self.state.epoch,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "criterion": self.criterion.state_dict(),
            "ema": None if self.average is None else self.average.state_dict(),
            "trainer": self.state.to_dict(),
            "rng": rng,
        }

    def request_stop(self, signum: int) -> None:
        """Stop at the next step boundary (a signal handler calls this): save a checkpoint
        there, resumable exactly from that step, and raise
        :class:`~ncollapse.errors.Preempted`. Inside the end-of-epoch evaluation, before the
        epoch's records are written, the evaluation is abandoned and redone on resume."""
        self.stop_signal = int(signum)

    def _stop_agreed(self) -> bool:
        """Whether to stop now; under torchrun every rank stops at the same step."""
        if not self.dist.enabled:
            return self.stop_signal is not None
        flag = torch.tensor([1.0 if self.stop_signal is not None else 0.0], device=self.device)
        stop = float(self.dist.all_reduce_sum(flag)[0]) > 0
        if stop and self.stop_signal is None:
            self.stop_signal = int(signal.SIGTERM)  # another rank's signal
        return stop

    def _save_position(
        self,
        epoch: int,
        step: int,
        partial: dict[str, Any],
        trainer_state: dict[str, Any] | None = None,
    ) -> str:
        """Save a checkpoint inside 0-based ``epoch`` after ``step`` of its steps (``partial``:
        the epoch's partial sums, or its train ``record`` when its evaluation is to be redone);
        returns where it stopped, in words."""
        ckpt = self.state_dict()
        ckpt["epoch"] = epoch
        if trainer_state is not None:  # the state before the abandoned end-of-epoch work
            ckpt["trainer"] = {**trainer_state, "wall_seconds": self.state.wall_seconds}
        partial = dict(partial)
        losses = partial.pop("loss_sum")
        losses = self.dist.all_gather_object(losses) if self.dist.enabled else [losses]
        steps = len(self.batches)
        ckpt["position"] = {"epoch": epoch, "step": step, "steps": steps, "loss_sum": losses}
        ckpt["position"].update(partial)
        assert self.run_dir is not None
        self.run_dir.save_checkpoint(ckpt)
        if step < steps:
            return f"in epoch {epoch + 1} after step {step} of {steps}"
        return f"after the training steps of epoch {epoch + 1} (its evaluation is redone)"

    def _save_before_evaluation(
        self, epoch: int, record: dict[str, Any], before: dict[str, Any]
    ) -> str:
        """Save a checkpoint after the training steps of 0-based ``epoch`` (its train
        ``record``), the trainer's state ``before`` its end-of-epoch work, which a resume
        redoes; returns where, in words."""
        self.state.epoch = epoch
        return self._save_position(
            epoch, len(self.batches), {"loss_sum": 0.0, "record": record}, before
        )

    def _save_boundary(self, epoch: int) -> None:
        """A checkpoint after epoch ``epoch`` (1-based, its records written), unless one was
        just saved."""
        assert self.run_dir is not None
        if self.last_checkpoint != epoch:
            self.run_dir.save_checkpoint(self.state_dict())
            self.last_checkpoint = epoch

    def _preempted(self, where: str) -> Preempted:
        """The :class:`~ncollapse.errors.Preempted` of this run, stopped ``where``."""
        assert self.run_dir is not None and self.stop_signal is not None
        return Preempted(self.stop_signal, str(self.run_dir.path), where)

    def _preempt(self, epoch: int, step: int, partial: dict[str, Any]) -> None:
        """Save a checkpoint inside 0-based ``epoch`` after ``step`` of its steps and raise
        :class:`~ncollapse.errors.Preempted`."""
        raise self._preempted(self._save_position(epoch, step, partial))

    def _preempt_at_boundary(self, epoch: int) -> None:
        """Stop after epoch ``epoch`` (1-based, its records written): a checkpoint of it, unless
        one was just saved, then :class:`~ncollapse.errors.Preempted`."""
        self._save_boundary(epoch)
        raise self._preempted(f"after epoch {epoch}")

    @property
    def resume_point(self) -> tuple[int, int, bool]:
        """Where training goes on: ``(epochs completed, steps of the next epoch done, whether
        only its evaluation is left)``; ``(epoch, 0, False)`` at an epoch boundary."""
        at = self._position
        if at is None:
            return self.state.epoch, 0, False
        return self.state.epoch, int(at["step"]), at.get("record") is not None

    def take_position(self, epoch: int) -> dict[str, Any] | None:
        """Where a checkpoint saved inside 0-based ``epoch`` stopped (the ``position`` it was
        resumed from), taken once; None to train the epoch from its start."""
        at, self._position = self._position, None
        if at is not None and int(at["epoch"]) != epoch:
            return None
        return at

    def recorded_epoch(self, at: dict[str, Any]) -> dict[str, Any]:
        """The train record of an epoch whose steps were done when it stopped (``at``: its
        position), with the rate its last step left."""
        for group in self.optimizer.param_groups:
            group["lr"] = at["record"]["lr"]
        return dict(at["record"])

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        try:
            self.network.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(
                f"the checkpoint does not fit the network this config builds ({first}); was the "
                "recipe or the code changed since the run started? Start a new run"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("criterion"):
            self.criterion.load_state_dict(ckpt["criterion"])
        if self.average is not None and ckpt.get("ema"):
            self.average.load_state_dict(ckpt["ema"])
        self.state.load(ckpt["epoch"], ckpt["trainer"])
        self.last_checkpoint = self.state.epoch
        self._position = ckpt.get("position")  # a checkpoint saved inside an epoch
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])  # noqa: NPY002
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)


class Stoppable(Protocol):
    """What :func:`stop_on_signals` needs of a trainer (:class:`~ncollapse.engine.loop.Trainer`,
    :class:`~ncollapse.engine.pack.PackedTrainer`)."""

    @property
    def stop_signal(self) -> int | None: ...

    def request_stop(self, signum: int) -> None: ...


#: the signals that stop a run at the next step boundary, with a checkpoint: SIGTERM (what
#: SLURM, Kubernetes and most schedulers send before they preempt or kill a job) and SIGUSR1
#: (what SLURM sends ahead of a time limit with ``--signal=USR1@SECONDS``)
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


@contextlib.contextmanager
def stop_on_signals(trainer: Stoppable) -> Iterator[None]:
    """While training, :data:`STOP_SIGNALS` ask ``trainer`` to stop at the next step boundary
    (:meth:`~ncollapse.engine.loop.Trainer.request_stop`); a second one of them ends the process
    at once, as it would have without this. Only in the main thread (where Python handles
    signals), and only for signals whose handling nobody else has set; the previous handlers
    come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None:  # asked twice: do what the signal did before
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        trainer.request_stop(signum)

    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None or signal.getsignal(sig) not in (signal.SIG_DFL, None):
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
