"""What the training loop does besides training, each behind one small interface.

:meth:`Trainer.fit <ncollapse.engine.loop.Trainer.fit>` runs epochs; around them it calls, in
order, the trainer's callbacks:

- ``on_fit_start(trainer)`` before the first epoch;
- ``on_before_step(trainer)`` after each backward pass, before the optimiser steps (the
  gradients are there, unscaled by :meth:`Trainer.unscale_gradients` when asked);
- ``on_step_end(trainer, epoch)`` after each optimiser step (0-based ``epoch``);
- ``on_epoch_end(trainer, epoch, records)`` after each epoch (1-based ``epoch``, the epoch just
  finished); ``records`` holds the epoch's train record and gets the ones a callback measures
  (evaluation, collapse), in the order they are written to ``metrics.jsonl``;
- ``on_fit_end(trainer, summary)`` once the summary is written.

The built-in ones, in the order the trainer runs them
(:func:`default_callbacks`): :class:`WeightAveraging` (``optim.ema``), :class:`GradientClipping`
(``optim.grad_clip``), :class:`DivergenceGuard`, :class:`Evaluation`
(``eval.every``), :class:`CollapseMeasurement` (``eval.collapse_every``), :class:`MetricsLog`
(``metrics.jsonl`` and TensorBoard), :class:`Checkpointing` (``run.checkpoint_every``, and the
final ``model.pt``) and :class:`ProgressReport`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..errors import UserError
from .tensorboard import EventWriter

#: the :class:`~ncollapse.engine.loop.Trainer` that calls a callback (it imports this module)
Trainer = Any

__all__ = [
    "BLOWUP_FACTOR",
    "Callback",
    "Checkpointing",
    "CollapseMeasurement",
    "DivergenceGuard",
    "Evaluation",
    "GradientClipping",
    "MetricsLog",
    "ProgressReport",
    "WeightAveraging",
    "default_callbacks",
]

Records = list[dict[str, Any]]


class Callback:
    """The interface; every method does nothing unless overridden."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_before_step(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        pass


def _due(every: int, epoch: int, epochs: int) -> bool:
    """Every ``every`` epochs (0: never) and always at the last one."""
    return bool(every and epoch % every == 0) or epoch == epochs


class WeightAveraging(Callback):
    """Keeps the trainer's running average of the weights (``trainer.average``, made when
    ``optim.ema`` > 0) up to date: after every step from epoch ``optim.ema_start`` on. Once it
    has started, evaluation, the collapse metrics and ``model.pt`` use it."""

    def __init__(self, start: float) -> None:
        self.start = start

    def on_step_end(self, trainer: Trainer, epoch: int) -> None:
        average = trainer.average
        if average is None or epoch < self.start:
            return
        if average.updates == 0:  # the average starts from the current weights
            average.reset(trainer.network)
        average.update(trainer.network)

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        if trainer.average is not None and trainer.dist.enabled:  # rank 0's BatchNorm statistics
            trainer.dist.sync_buffers(trainer.average.module)


#: a mean loss this many times the first epoch's is reported as a blow-up
BLOWUP_FACTOR = 1e3


class DivergenceGuard(Callback):
    """The guard against divergence: a checkpoint is only ever a good state. After every epoch,
    before anything is evaluated or saved, the mean loss and every floating-point weight and
    BatchNorm buffer must be finite; otherwise the run stops with a message naming the epoch
    whose checkpoint is kept (or that none is) and what to do. A mean loss that has grown by
    :data:`BLOWUP_FACTOR` over the first epoch's is reported once as a warning."""

    def __init__(self) -> None:
        self.warned = False

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        rec = records[0]
        loss, e1 = rec["loss"], rec["epoch"]
        net = trainer.network
        bad = [
            name
            for name, t in (*net.named_parameters(), *net.named_buffers())
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        state = trainer.state
        if not math.isfinite(loss) or bad:
            what = f"the training loss became {loss:g}" if not math.isfinite(loss) else ""
            if bad:
                what += (" and " if what else "") + (
                    f"{len(bad)} weight/BatchNorm tensors hold NaN or inf ({', '.join(bad[:3])}"
                    + (", ..." if len(bad) > 3 else "")
                    + ")"
                )
            saved = trainer.last_checkpoint
            kept = (
                f"the last good checkpoint (epoch {saved}) is kept in {trainer.run_dir.path}"
                if saved and trainer.run_dir is not None
                else "no checkpoint was written before"
            )
            raise UserError(
                f"training diverged in epoch {e1}: {what}; {kept}: lower optim.lr (now "
                f"{trainer.optim.lr:g}) and start a new run (a resume would repeat the same steps)"
            )
        if state.first_loss is None:
            state.first_loss = loss
        elif loss > BLOWUP_FACTOR * max(state.first_loss, 1e-12) and not self.warned:
            self.warned = True
            warnings.warn(
                f"the training loss grew from {state.first_loss:.4g} (epoch 1) to {loss:.4g} "
                f"(epoch {e1}): training is probably diverging; lower optim.lr (now "
                f"{trainer.optim.lr:g})",
                stacklevel=3,
            )


class GradientClipping(Callback):
    """Scale the gradient down to the global L2 norm ``max_norm`` when it is larger
    (``optim.grad_clip``), before every step."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm = float(max_norm)

    def on_before_step(self, trainer: Trainer) -> None:
        trainer.unscale_gradients()
        torch.nn.utils.clip_grad_norm_(trainer.params, self.max_norm)


class Evaluation(Callback):
    """Accuracy on ``eval.splits`` every ``eval.every`` epochs and at the end; keeps the best
    test accuracy seen (reported as chosen on the test set, never as the result)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        if not _due(self.every, epoch, trainer.epochs):
            return
        evals = trainer.evaluate(epoch)
        records.extend(evals)
        state = trainer.state
        for r in evals:
            if r["split"] == "test" and r["acc"] > state.best_acc:
                state.best_acc, state.best_epoch = r["acc"], epoch


class CollapseMeasurement(Callback):
    """The neural-collapse metrics every ``eval.collapse_every`` epochs and at the end; the
    final class means and classifier go to ``collapse_final.npz`` for the plots."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        if _due(self.every, epoch, trainer.epochs):
            records.extend(trainer.collapse(epoch))

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if trainer.collapse_state is not None:  # final class means and classifier, for plots
            trainer.run_dir.save_collapse_state(
                trainer.collapse_state,
                classifier=trainer.eval_network.classifier_weight().detach().cpu(),
            )


class MetricsLog(Callback):
    """Every record to ``metrics.jsonl`` and, with ``run.tensorboard``, to TensorBoard."""

    def __init__(self, tensorboard: bool) -> None:
        self.tensorboard = tensorboard
        self.tb: EventWriter | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.tensorboard and self.tb is None and getattr(trainer.run_dir, "writes", True):
            folder = trainer.run_dir.tensorboard_dir
            earlier = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
            self.tb = EventWriter(folder)
            if earlier:
                # a resume: one event file with the records kept (metrics.jsonl, cut back to the
                # checkpoint), so each tag stays one series without the replayed epochs' points
                for record in trainer.run_dir.metrics():
                    self._add(record, flush=False)
                self.tb.flush()
                for path in earlier:
                    if path != self.tb.path:
                        path.unlink(missing_ok=True)

    def _add(self, record: dict[str, Any], flush: bool = True) -> None:
        assert self.tb is not None
        kind = record.get("kind")
        if kind not in ("train", "eval", "collapse") or "epoch" not in record:
            return
        prefix = kind if kind == "train" else f"{kind}_{record.get('split')}"
        self.tb.add_scalars(prefix, record, record["epoch"], flush=flush)

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        for record in records:
            trainer.run_dir.append_metrics(record)
            if self.tb is not None:
                self._add(record)
        trainer.epoch_logged = epoch  # the epoch's records are out: it is not replayed

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Checkpointing(Callback):
    """``checkpoint.pt`` every ``run.checkpoint_every`` epochs and at the end; ``model.pt``
    (the evaluated weights) when the run ends."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        if epoch % self.every == 0 or epoch == trainer.epochs:
            trainer.run_dir.save_checkpoint(trainer.state_dict())
            trainer.last_checkpoint = epoch

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        trainer.run_dir.save_model(trainer.eval_network.state_dict())


class ProgressReport(Callback):
    """One line per epoch: loss, rate, throughput and the accuracies just measured."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, records: Records) -> None:
        rec = records[0]
        line = f"loss {rec['loss']:.4f} lr {rec['lr']:.4g} {rec['images_per_s']:,.0f} img/s"
        for r in records:
            if r["kind"] == "eval":
                line += f" | {r['split']} acc {100 * r['acc']:.2f}%"
                if r.get("bal_acc") is not None:
                    line += f" bal {100 * r['bal_acc']:.2f}%"
        trainer.progress.epoch(epoch - 1, rec["seconds"], line)


def default_callbacks(optim: Any, evaluation: Any, run: Any) -> list[Callback]:
    """The callbacks of a run, from the ``optim``, ``eval`` and ``run`` sections of its config,
    in the order they run."""
    out: list[Callback] = []
    if optim.ema > 0:
        out.append(WeightAveraging(optim.ema_start))
    if getattr(optim, "grad_clip", None):
        out.append(GradientClipping(optim.grad_clip))
    out += [
        DivergenceGuard(),
        Evaluation(evaluation.every),
        CollapseMeasurement(evaluation.collapse_every),
        MetricsLog(run.tensorboard),
        Checkpointing(run.checkpoint_every),
        ProgressReport(),
    ]
    return out
