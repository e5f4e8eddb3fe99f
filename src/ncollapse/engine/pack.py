"""Several runs trained in one process as one batched model (``ncollapse sweep --pack N``).

Runs whose backbones have the same shape (seeds of one method, or methods on the same backbone
with different heads and losses) share every forward and backward pass of the backbone: its
weights are stacked run by run (``torch.func.stack_module_state``) and the backbone runs once
on all the runs' batches under ``torch.vmap`` (a convolution becomes one grouped convolution,
BatchNorm keeps each run's statistics). Everything else stays each run's own, as the
:class:`~ncollapse.engine.loop.Trainer` it would train alone has it: its data order,
augmentation and mixup, its head and loss, its optimiser, schedule and weight average, its
callbacks (evaluation, collapse metrics, the divergence guard, checkpoints, logs) and its run
directory. Each run's backbone parameters and BatchNorm buffers are views of its slice of the
stacked tensors, so its optimiser steps them in place and its evaluation and checkpoints read
them; checkpoints and ``model.pt`` are written from compact copies.

A packed run equals the run alone to float rounding (the grouped convolution sums in another
order), not bit for bit. What a pack needs of its runs (:func:`pack_unavailable`): resident data,
one process, no extra batches, a network ``head(backbone(x))`` with ``backbone`` and ``head``
submodules, and, across the pack, one device, precision, memory layout, number of steps per
epoch, number of epochs, starting epoch and backbone shape. A run that diverges stops alone
(its error kept, the others go on). Packing and ``run.step=graph`` are not combined: packed
runs take the eager step. SIGTERM and SIGUSR1 (:func:`.checkpoints.stop_on_signals`) stop every
run of the pack at the same step boundary, each with its mid-epoch checkpoint
(:meth:`PackedTrainer.request_stop`), so that the pack resumes together, from that step.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..errors import Preempted
from .batches import StepInput, not_resident_alone
from .loop import StopNow

__all__ = ["PackedTrainer", "backbone_shape", "pack_unavailable"]

#: the :class:`~ncollapse.engine.loop.Trainer` of one run (it imports this module's users)
Trainer = Any


def backbone_shape(network: nn.Module) -> tuple[Any, ...] | None:
    """What must agree for two networks' backbones to be stacked: the module types, and every
    parameter's and buffer's name, shape and type (None: the network has no ``backbone``)."""
    backbone = getattr(network, "backbone", None)
    if not isinstance(backbone, nn.Module) or not isinstance(
        getattr(network, "head", None), nn.Module
    ):
        return None
    return (
        tuple(type(m).__name__ for m in backbone.modules()),
        tuple((n, tuple(t.shape), t.dtype) for n, t in backbone.named_parameters()),
        tuple((n, tuple(t.shape), t.dtype) for n, t in backbone.named_buffers()),
    )


def pack_unavailable(trainer: Trainer, first: Trainer | None = None) -> str | None:
    """Why ``trainer`` cannot train in a pack (with ``first``, the pack's first run), in a few
    words; None when it can."""
    t = trainer
    reason = not_resident_alone(t)
    if reason is not None:
        return reason
    if backbone_shape(t.network) is None:
        return "the network has no backbone and head to split"
    if first is None or first is t:
        return None
    checks = [
        ("backbone", backbone_shape(t.network), backbone_shape(first.network)),
        ("device", t.device, first.device),
        ("precision", t.amp_dtype, first.amp_dtype),
        ("memory layout (run.channels_last)", t.memory_format, first.memory_format),
        ("images per epoch", t.batches.images.shape[0], first.batches.images.shape[0]),
        ("batch size", t.batches.batch_size, first.batches.batch_size),
        ("number of epochs", t.epochs, first.epochs),
        ("starting epoch", t.state.epoch, first.state.epoch),
        ("step the resume starts from", t.resume_point, first.resume_point),
    ]
    for what, mine, theirs in checks:
        if mine != theirs:
            return f"the {what} differs from the pack's"
    return None


class PackedTrainer:
    """Trains ``trainers`` (built as each would train alone) together; see the module
    docstring. :meth:`fit` returns each run's summary, or the error that stopped it."""

    def __init__(self, trainers: Sequence[Trainer]) -> None:
        self.trainers = list(trainers)
        for t in self.trainers:
            reason = pack_unavailable(t, self.trainers[0])
            if reason is not None:
                raise ValueError(f"run {t.name} cannot be packed: {reason}")
        backbones = [t.network.backbone for t in self.trainers]
        params, buffers = stack_module_state(backbones)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        for i, backbone in enumerate(backbones):  # each run's tensors: views of its slice
            for name, p in backbone.named_parameters():
                p.data = params[name].detach()[i]
            for name, _ in list(backbone.named_buffers()):
                owner, _, leaf = name.rpartition(".")
                backbone.get_submodule(owner)._buffers[leaf] = buffers[name][i]
        self.template = copy.deepcopy(backbones[0]).to("meta")
        self.errors: dict[int, BaseException] = {}

        def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor):
            return functional_call(self.template, (p, b), (x,))

        self._forward = vmap(forward)

    @property
    def live(self) -> list[tuple[int, Trainer]]:
        """The runs still training (not stopped by an error), with their index."""
        return [(i, t) for i, t in enumerate(self.trainers) if i not in self.errors]

    # ------------------------------------------------------------------ stopping on a signal
    @property
    def stop_signal(self) -> int | None:
        """The signal that asked the pack to stop (None: none did)."""
        return next((t.stop_signal for t in self.trainers if t.stop_signal is not None), None)

    def request_stop(self, signum: int) -> None:
        """Stop every run of the pack at the next step boundary, together
        (:meth:`~ncollapse.engine.loop.Trainer.request_stop`; what
        :func:`~.checkpoints.stop_on_signals` calls): each run saves its checkpoint there, then
        :class:`~ncollapse.errors.Preempted` is raised once for the pack."""
        for t in self.trainers:
            t.request_stop(signum)

    def _preempted(self, wheres: list[str]) -> Preempted:
        """One :class:`~ncollapse.errors.Preempted` for the live runs, each saved ``wheres``
        (the same place for every run of a pack)."""
        signum = self.stop_signal
        assert signum is not None
        paths = ", ".join(str(t.run_dir.path) for _, t in self.live)
        return Preempted(signum, paths, f"{wheres[0]} (each run of the pack)")

    # ------------------------------------------------------------------ the run
    def fit(self, run_dirs: Sequence[Any]) -> list[dict[str, Any] | BaseException]:
        """Train every run from its ``state.epoch`` to the end, each writing into its run
        directory (``run_dirs``, in order): each run's summary, or the error that stopped it."""
        for t, run_dir in zip(self.trainers, run_dirs):
            t.start_fit(_CompactWrites(run_dir))
        latest: list[dict[tuple[str, str], dict[str, Any]]] = [{} for _ in self.trainers]
        first = self.trainers[0]
        for epoch in range(first.state.epoch, first.epochs):
            records = self.train_epoch(epoch)
            self.end_epoch(epoch, records, latest)
            if not self.live:
                break
            if epoch + 1 < first.epochs and self.stop_signal is not None:
                for _, t in self.live:  # every run stops after this epoch, records written
                    t._save_boundary(epoch + 1)
                raise self._preempted([f"after epoch {epoch + 1}"])
        out: list[dict[str, Any] | BaseException] = []
        for i, t in enumerate(self.trainers):
            if i in self.errors:
                out.append(self.errors[i])
                continue
            try:
                out.append(t.end_fit(latest[i]))
            except Exception as exc:
                out.append(exc)
        return out

    def end_epoch(
        self,
        epoch: int,
        records: dict[int, dict[str, Any]],
        latest: list[dict[tuple[str, str], dict[str, Any]]],
    ) -> None:
        """Each live run's end of 0-based ``epoch`` (its callbacks: evaluation, checkpoint,
        logs). A run that diverged stops alone. A stop request during an evaluation takes every
        run back to the end of the epoch's training steps, each saved to redo its evaluation on
        resume (the runs whose records were written too), so that the pack resumes together."""
        before = {i: t.state.to_dict() for i, t in self.live}
        for i, t in self.live:
            try:
                t.epoch_callbacks(epoch, records[i], latest[i])
            except StopNow:
                wheres = [
                    u._save_before_evaluation(epoch, records[k], before[k]) for k, u in self.live
                ]
                raise self._preempted(wheres) from None
            except Exception as exc:  # a run that diverged stops; the others go on
                self.errors[i] = exc

    def train_epoch(self, epoch: int) -> dict[int, dict[str, Any]]:
        """One pass of every live run over its training set: each run's train record. A pack
        resumed from checkpoints saved inside this epoch (all at the same step:
        :func:`pack_unavailable`) goes on from that step; a stop request saves such
        checkpoints at the next step boundary."""
        live = self.live
        for _, t in live:
            t.network.train()
            t.criterion.set_epoch(epoch)
        self.template.train()
        at = {i: t.take_position(epoch) for i, t in live}
        if all(a is not None and a.get("record") is not None for a in at.values()):
            return {i: t.recorded_epoch(at[i]) for i, t in live}  # only the evaluation was left
        num_batches = len(live[0][1].batches)
        first = max((int(a["step"]) for a in at.values() if a is not None), default=0)
        per_batch = {i: t.schedule.per_batch(t.optim, epoch) for i, t in live}
        lr = {i: t._set_lr(epoch, 0.0 if per_batch[i] else 1.0) for i, t in live}
        for i, t in live:
            if first and per_batch[i]:
                lr[i] = t._set_lr(epoch, first / num_batches)
        device = live[0][1].device
        loss_sum = {
            i: torch.tensor(
                0.0 if a is None else float(a["loss_sum"][0]), device=device, dtype=torch.float64
            )
            for i, a in at.items()
        }
        seen = {i: 0 if a is None else int(a["seen"]) for i, a in at.items()}
        before = {i: 0.0 if a is None else float(a["seconds"]) for i, a in at.items()}
        start = time.perf_counter()
        epochs = [
            t.batches.epoch(epoch, t.seed, t._mixup_alpha(epoch), start=first) for _, t in live
        ]
        for b, steps in enumerate(zip(*epochs), start=first):
            for i, t in live:
                if per_batch[i]:
                    lr[i] = t._set_lr(epoch, (b + 1) / num_batches)
            shares = self._step(live, steps)
            for (i, t), share, step in zip(live, shares, steps):
                for callback in t._step_hooks:
                    callback.on_step_end(t, epoch)
                loss_sum[i] += share
                seen[i] += step.size
            if self.stop_signal is not None:  # every run saves this step, then the pack stops
                wheres = []
                for i, t in live:
                    partial = {
                        "loss_sum": float(loss_sum[i]),
                        "seen": seen[i],
                        "counted": seen[i],
                        "seconds": before[i] + time.perf_counter() - start,
                        "lr": lr[i],
                    }
                    wheres.append(t._save_position(epoch, b + 1, partial))
                raise self._preempted(wheres)
        return {
            i: t._train_record(epoch, loss_sum[i], seen[i], lr[i], start, before[i])
            for i, t in live
        }

    def _step(
        self, live: list[tuple[int, Trainer]], steps: Sequence[StepInput]
    ) -> list[torch.Tensor]:
        """One optimiser step of every live run: the backbones' forward and backward once, on
        all the runs' batches; each run's head, loss and step its own."""
        first = live[0][1]
        dtype = first.amp_dtype
        autocast = torch.autocast(first.device.type, dtype=dtype, enabled=dtype is not None)
        for _, t in live:
            t.optimizer.zero_grad(set_to_none=True)
        for p in self.params.values():
            p.grad = None
        x = torch.stack([s.x for s in steps]) if len(live) == len(self.trainers) else None
        if x is None:  # a run has stopped: its slice sees a live run's batch, and no loss
            order = {i: s.x for (i, _), s in zip(live, steps)}
            x = torch.stack([order.get(i, steps[0].x) for i in range(len(self.trainers))])
        with autocast, warnings.catch_warnings():
            # torch.func runs an operation without a batched rule (adaptive pooling's resize)
            # once per run, and says so: that is all it means here
            warnings.filterwarnings("ignore", message="There is a performance drop because")
            features = self._forward(self.params, self.buffers, x)
            outs = [t.network.head(features[i]) for i, t in live]
        total = None
        shares = []
        for (_, t), out, step in zip(live, outs, steps):
            out = type(out)(*(v.float() for v in out))
            loss = t.criterion(step.batch, out)
            shares.append(loss.detach().double() * step.size)
            scaled = t.scaler.scale(loss)
            total = scaled if total is None else total + scaled
        assert total is not None
        total.backward()
        for i, t in live:  # each run's backbone gradients: views of its slice
            for name, p in t.network.backbone.named_parameters():
                grad = self.params[name].grad
                p.grad = None if grad is None else grad[i]
            for callback in t._before_step_hooks:
                callback.on_before_step(t)
            t.scaler.step(t.optimizer)
            t.scaler.update()
        return shares


class _CompactWrites:
    """A run directory whose checkpoints and ``model.pt`` are written from compact copies of
    the tensors (a packed run's backbone tensors are views of the whole pack's storage, which
    ``torch.save`` would write in full)."""

    def __init__(self, run_dir: Any) -> None:
        self._run_dir = run_dir

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run_dir, name)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._run_dir.save_checkpoint(_compact(state))

    def save_model(self, state_dict: dict[str, Any]) -> None:
        self._run_dir.save_model(_compact(state_dict))


def _compact(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.untyped_storage().nbytes() > obj.nbytes else obj
    if isinstance(obj, dict):
        out = type(obj)((k, _compact(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_compact(v) for v in obj)
    return obj
