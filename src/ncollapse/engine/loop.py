"""The training and evaluation loop.

The loop knows no head, no loss and no method. It gets, already built by the composition layer:

- a network: ``network(x) -> HeadOutput(features, logits)``, with ``classifier_weight/bias()``;
- a criterion (:class:`ncollapse.criterion.Criterion`): ``criterion(batch, out) -> loss``, with
  ``set_epoch``, ``state_dict``/``load_state_dict`` and ``sampling_weights`` for extra batches;
- the data bundle and the resolved augmentation (a :class:`~ncollapse.data.BatchAugment`);
- the ``optim``, ``eval`` and ``run`` sections of the config and an
  :class:`~ncollapse.engine.evaluate.Evaluator`; :meth:`Trainer.fit` gets the run directory it
  writes to (:class:`RunFiles`).

The optimiser and the schedule are made by name from their registries (``optim.optimizer``,
``optim.schedule``). :meth:`Trainer.fit` runs the epochs; everything else it does (evaluation,
collapse measurement, the divergence guard, checkpoints, logging, weight averaging, gradient
clipping) is a callback (:mod:`.callbacks`).

Data stays resident as uint8 tensors on the training device; each batch is one gather, one
batched augmentation and one forward (extra batches are forwarded together with the main one).
Data that does not fit streams through DataLoader workers (:mod:`.sources`). Under torchrun the
network is wrapped in DistributedDataParallel and every rank trains on its share of the global
batch (:mod:`.distributed`, :mod:`.step`); rank 0 alone writes.
Training runs in bf16 autocast where the hardware supports it (:mod:`.precision`); everything
measured (accuracy, collapse statistics) is computed in float32. Randomness is derived per epoch
from the training seed (data order, crops, flips, mixup), so a run resumed from its epoch-``e``
checkpoint draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..criterion import Criterion
from ..data.augment import BatchAugment
from ..data.base import DataBundle
from .batches import StepInput
from .callbacks import Callback, default_callbacks
from .checkpoints import Checkpointing, RunFiles
from .distributed import SINGLE, Distributed
from .ema import WeightAverage
from .evaluate import Evaluator, network_outputs
from .graphs import STEPS, GraphStep
from .optimizers import build_optimizer
from .precision import autocast_dtype, precision_name
from .progress import Progress
from .schedule import SCHEDULES
from .sources import Splits
from .state import TrainState, epoch_generators, resolve_device
from .step import forward_loss, sees_global_batch
from .syncbn import convert_sync_batchnorm

__all__ = ["RunFiles", "StopNow", "Trainer", "epoch_generators", "resolve_device"]


class Trainer(Checkpointing):
    """Runs ``optim.epochs`` epochs on ``data.train`` and evaluates on ``data.test`` (and
    ``data.val``); ``callbacks`` run after the built-in ones (:mod:`.callbacks`)."""

    def __init__(
        self,
        network: nn.Module,
        criterion: Criterion,
        data: DataBundle,
        *,
        optim: Any,
        evaluation: Any,
        run: Any,
        seed: int,
        augment: BatchAugment | None,
        device: torch.device,
        evaluator: Evaluator,
        progress: Progress | None = None,
        name: str = "run",
        dist: Distributed = SINGLE,
        workers: int = 0,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.name = name
        self.optim = optim
        self.epochs = int(optim.epochs)
        self.eval_cfg = evaluation
        self.run_cfg = run
        self.seed = int(seed)
        self.device = device
        self.dist = dist
        self.network = network.to(device)
        if dist.enabled and getattr(run, "sync_bn", False):
            self.network = convert_sync_batchnorm(self.network, device)
        self.criterion = criterion.to(device)
        self.data = data
        self.run_dir: RunFiles | None = None  # given to fit()
        self.evaluator = evaluator
        self.progress = progress or Progress(optim.epochs, run.progress)
        self.state = TrainState()
        self.augment = augment

        # NHWC layout: oneDNN (CPU) and cuDNN (AMP) run 3x3 convolutions much faster in it
        self.memory_format = torch.preserve_format
        if run.channels_last:  # every dataset's batches are (B, C, H, W)
            self.memory_format = torch.channels_last
            self.network.to(memory_format=torch.channels_last)
        self.splits = Splits(
            data,
            device,
            normalize=None if augment is None else augment.normalize,
            memory_format=self.memory_format,
            workers=workers,
            dist=dist,
        )
        o = optim
        self.params = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, o)
        self.schedule = SCHEDULES.get(o.schedule)
        self.amp_dtype = autocast_dtype(device, run.amp)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=device.type == "cuda" and self.amp_dtype == torch.float16
        )
        #: the running average of the weights (``optim.ema``), kept by a callback
        self.average = WeightAverage(self.network, o.ema) if o.ema > 0 else None
        self.batches = self.splits.train_batches(
            augment,
            batch_size=o.batch_size,
            extra_weights={
                name: torch.as_tensor(w, dtype=torch.float32)
                for name, w in (criterion.sampling_weights or {}).items()
            },
            balanced_from=o.balanced_from,
            without_extra=getattr(criterion, "without_extra", ""),
        )
        self.model = dist.wrap(self.network)  # what the training steps call (DDP under torchrun)
        self.global_batch = sees_global_batch(getattr(run, "loss_batch", "auto"), criterion, dist)
        self.collapse_state: Any = None  # the train split's last accumulator (for the plots)
        self.last_checkpoint = 0  # the epoch of the last checkpoint written (0: none)
        #: a signal asked the run to stop (:meth:`request_stop`): at the next step boundary a
        #: checkpoint is saved and :class:`~ncollapse.errors.Preempted` raised
        self.stop_signal: int | None = None
        self.epoch_logged = 0  # the last epoch whose records are written (MetricsLog sets it)
        self._position: dict[str, Any] | None = None  # where a mid-epoch checkpoint stopped
        self.callbacks = [*default_callbacks(optim, evaluation, run), *callbacks]
        self._step_hooks = _overriding(self.callbacks, "on_step_end")
        self._before_step_hooks = _overriding(self.callbacks, "on_before_step")
        self._clock: tuple[float, float] | None = None  # (wall seconds before, fit start)
        #: the captured step that trains the epochs (``run.step=graph``); None: the eager step
        self.graph: GraphStep | None = STEPS.get(getattr(run, "step", None) or "eager")(self)

    @property
    def precision(self) -> str:
        """What the training steps compute in: ``fp32``, ``bf16`` or ``fp16`` (autocast)."""
        return precision_name(self.amp_dtype)

    @property
    def eval_network(self) -> nn.Module:
        """The weights that are evaluated and saved: the running average once it has started."""
        if self.average is not None and self.average.updates > 0:
            return self.average.module
        return self.network

    # ------------------------------------------------------------------ training
    def _set_lr(self, epoch: int, progress: float = 1.0) -> float:
        lr = self.schedule.lr(self.optim, epoch, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _mixup_alpha(self, epoch: int) -> float:
        until = self.optim.mixup_epochs
        return self.optim.mixup_alpha if until is None or epoch < until else 0.0

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set (0-based ``epoch``); returns the train record. A run
        resumed from a checkpoint saved inside this epoch goes on from its step."""
        self.network.train()
        self.criterion.set_epoch(epoch)
        at = self.take_position(epoch)
        if at is not None and at.get("record") is not None:  # stopped in the end-of-epoch work
            return self.recorded_epoch(at)
        if self.graph is not None:
            start = time.perf_counter()
            loss_sum, seen, lr = self.graph.run_epoch(epoch, start, at)
            before = 0.0 if at is None else float(at["seconds"])
            return self._train_record(epoch, loss_sum, seen, lr, start, before)
        num_batches = len(self.batches)
        per_batch = self.schedule.per_batch(self.optim, epoch)
        lr = self._set_lr(epoch, 0.0 if per_batch else 1.0)
        first = 0 if at is None else int(at["step"])
        rank = self.dist.rank if self.dist.enabled else 0
        loss_sum = torch.tensor(
            0.0 if at is None else float(at["loss_sum"][rank]),
            device=self.device,
            dtype=torch.float64,
        )
        seen = 0 if at is None else int(at["seen"])
        counted = 0 if at is None else int(at["counted"])
        before = 0.0 if at is None else float(at["seconds"])
        if at is not None:
            lr = self._set_lr(epoch, first / num_batches) if per_batch else lr
        start = time.perf_counter()
        steps: Any = ()
        if first < num_batches:
            steps = self.batches.epoch(epoch, self.seed, self._mixup_alpha(epoch), start=first)
        for b, step in enumerate(steps, start=first):
            if per_batch:
                lr = self._set_lr(epoch, (b + 1) / num_batches)
            share, n = self._step(step)
            for callback in self._step_hooks:
                callback.on_step_end(self, epoch)
            loss_sum += share
            seen += step.size
            counted += n
            if self.progress.mode == "bar":
                elapsed = time.perf_counter() - start
                self.progress.batch(
                    epoch,
                    b + 1,
                    num_batches,
                    float(loss_sum) / max(counted, 1),
                    (seen if at is None else seen - int(at["seen"])) / max(elapsed, 1e-9),
                    before + elapsed,
                )
            if self._stop_agreed():
                partial = {
                    "loss_sum": float(loss_sum),
                    "seen": seen,
                    "counted": counted,
                    "seconds": before + time.perf_counter() - start,
                    "lr": lr,
                }
                self._preempt(epoch, b + 1, partial)
        return self._train_record(epoch, loss_sum, seen, lr, start, before)

    def _train_record(
        self,
        epoch: int,
        loss_sum: torch.Tensor,
        seen: int,
        lr: float,
        start: float,
        before: float = 0.0,
    ) -> dict[str, Any]:
        """The train record of 0-based ``epoch``: the loss sum over its ``seen`` samples, its last
        rate, its time since ``start`` (plus ``before``, the seconds of its steps before a
        resume)."""
        if self.dist.enabled:  # the loss over all ranks; rank 0's BatchNorm statistics everywhere
            loss_sum = self.dist.all_reduce_sum(loss_sum)
            self.dist.sync_buffers(self.network)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = before + time.perf_counter() - start
        return {
            "kind": "train",
            "epoch": epoch + 1,
            "loss": float(loss_sum) / max(seen, 1),
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9),
        }

    def _step(self, step: StepInput) -> tuple[torch.Tensor, int]:
        """Forward the batch (and any extra batches, in one forward), the loss, one optimiser
        step; returns this rank's share of the epoch's loss sum and the samples it counts
        (:func:`~ncollapse.engine.step.forward_loss`)."""
        loss, share, counted = forward_loss(
            self.model,
            self.criterion,
            step,
            amp_dtype=self.amp_dtype,
            device_type=self.device.type,
            dist=self.dist,
            global_batch=self.global_batch,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for callback in self._before_step_hooks:
            callback.on_before_step(self)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return share, counted

    def unscale_gradients(self) -> None:
        """Divide the gradients by the loss scale of fp16 training (nothing to do otherwise), so
        that a callback sees their true size before the step."""
        self.scaler.unscale_(self.optimizer)

    # ------------------------------------------------------------------ evaluation
    def iterate_outputs(
        self, split: str, tta: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(features, logits, labels)`` of the evaluated weights over a split (``train``,
        ``test`` or ``val``; this rank's share under torchrun) in eval mode, without
        augmentation, in float32."""
        batches = self.splits.eval_batches(split, self.eval_cfg.batch_size)
        if not self.dist.enabled:  # under torchrun the ranks stop together, at a step boundary
            batches = self._unless_stopped(batches)
        return network_outputs(self.eval_network, batches, tta=tta)

    def _unless_stopped(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, abandoned at a stop request while an epoch's records are not yet
        written (the epoch's evaluation is then redone on resume)."""
        for item in batches:
            if self.stop_signal is not None and self.epoch_logged < self.state.epoch:
                raise StopNow
            yield item

    def evaluate(self, epoch: int) -> list[dict[str, Any]]:
        """Accuracy records (overall, per class, many/medium/few by count and by index) on the
        splits of ``eval.splits``."""
        out = []
        for split in self.eval_cfg.splits:
            outputs = self.iterate_outputs(split, tta=self.eval_cfg.tta)
            acc = self.evaluator.accuracy(outputs, dist=self.dist)
            out.append({"kind": "eval", "epoch": epoch, "split": split, **acc})
        return out

    def collapse(self, epoch: int) -> list[dict[str, Any]]:
        """Neural-collapse records on the splits asked for (eval mode, no augmentation)."""
        net = self.eval_network
        out = []
        for split in self.eval_cfg.collapse_splits:
            values, acc = self.evaluator.collapse(
                lambda s=split: self.iterate_outputs(s),
                net.classifier_weight(),
                net.classifier_bias(),
                device=self.device,
                dist=self.dist,
            )
            if split == "train":
                self.collapse_state = acc
            out.append({"kind": "collapse", "epoch": epoch, "split": split, **values})
        return out

    # ------------------------------------------------------------------ the run
    def _tick(self) -> None:
        """Bring ``state.wall_seconds`` up to now: the time spent in :meth:`fit`, over every
        session of the run."""
        if self._clock is not None:
            before, start = self._clock
            self.state.wall_seconds = before + time.perf_counter() - start

    def fit(self, run_dir: RunFiles) -> dict[str, Any]:
        """Train from ``self.state.epoch`` to the end, writing into ``run_dir``; returns the
        summary written to summary.json."""
        self.start_fit(run_dir)
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for epoch in range(self.state.epoch, self.epochs):
            self.end_epoch(epoch, self.train_epoch(epoch), latest)
            if epoch + 1 < self.epochs and self._stop_agreed():
                self._preempt_at_boundary(epoch + 1)
        return self.end_fit(latest)

    # the three parts of fit(), which a pack of runs (:mod:`.pack`) calls for each of its runs
    def start_fit(self, run_dir: RunFiles) -> None:
        self.run_dir = run_dir
        self._clock = (self.state.wall_seconds, time.perf_counter())
        for callback in self.callbacks:
            callback.on_fit_start(self)
        self.epoch_logged = self.state.epoch
        self.progress.start()

    def end_epoch(
        self, epoch: int, record: dict[str, Any], latest: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        """After 0-based ``epoch`` trained (its train ``record``): the callbacks, and the records
        they add kept in ``latest`` by kind and split. A stop requested during the evaluation,
        before the records are written (:meth:`request_stop`), saves a checkpoint from which a
        resume redoes it, and raises :class:`~ncollapse.errors.Preempted`."""
        before = self.state.to_dict()  # what a stop during the evaluation goes back to
        try:
            self.epoch_callbacks(epoch, record, latest)
        except StopNow:
            raise self._preempted(self._save_before_evaluation(epoch, record, before)) from None

    def epoch_callbacks(
        self, epoch: int, record: dict[str, Any], latest: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        """:meth:`end_epoch` without its stop: :class:`StopNow` when a stop request abandons
        the evaluation (a pack of runs stops all of them together)."""
        records = [record]
        self.state.train_seconds += record["seconds"]
        self.state.epoch = epoch + 1
        for callback in self.callbacks:
            callback.on_epoch_end(self, epoch + 1, records)
        latest.update({(r["kind"], r.get("split", "")): r for r in records})

    def end_fit(self, latest: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        assert self.run_dir is not None
        if not any(kind == "eval" for kind, _ in latest):  # resumed a finished run
            latest = self._reported()
        summary = self._summary(latest)
        self.run_dir.write_summary(summary)
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        return summary

    def _reported(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The last eval records in the run's metrics (measured now when it has none), and the
        collapse records of that epoch."""
        assert self.run_dir is not None
        records = self.run_dir.metrics()
        evals = {r.get("split", "test"): r for r in records if r.get("kind") == "eval"}
        if not evals:
            evals = {r["split"]: r for r in self.evaluate(self.state.epoch)}
        last = max(r["epoch"] for r in evals.values())
        latest = {("eval", split): r for split, r in evals.items()}
        for r in records:
            if r.get("kind") == "collapse" and r["epoch"] == last:
                latest[("collapse", r["split"])] = r
        return latest

    def _summary(self, latest: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        def strip(r: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if r is None else {k: v for k, v in r.items() if k not in ("kind", "split")}

        last = max((r["epoch"] for (kind, _), r in latest.items() if kind == "collapse"), default=0)
        self._tick()
        summary = {
            "name": self.name,
            "epochs": self.epochs,
            "final": strip(latest.get(("eval", "test"))) or {},
            "collapse": {
                split: strip(r)
                for (kind, split), r in latest.items()
                if kind == "collapse" and r["epoch"] == last
            },
            "train_seconds": self.state.train_seconds,
            "wall_seconds": self.state.wall_seconds,
            "device": str(self.device),
            "precision": self.precision,
            "weights": "average" if self.eval_network is not self.network else "last",
            "host": platform.node(),
        }
        if self.state.best_epoch > 0:  # only when the test set was measured during training
            summary["best_test_selected"] = {
                "note": "chosen on the test set; report 'final' as the result",
                "epoch": self.state.best_epoch,
                "acc": self.state.best_acc,
            }
        if ("eval", "val") in latest:
            summary["val"] = strip(latest[("eval", "val")])
        return summary


class StopNow(Exception):
    """A stop request inside the end-of-epoch evaluation (caught in :meth:`Trainer.end_epoch`,
    or by a pack of runs around :meth:`Trainer.epoch_callbacks`)."""


def _overriding(callbacks: Sequence[Callback], hook: str) -> list[Any]:
    """The callbacks that do something in ``hook`` (the per-step hooks skip the others)."""
    return [c for c in callbacks if getattr(type(c), hook, None) is not getattr(Callback, hook)]
