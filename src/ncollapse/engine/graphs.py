"""The training step captured once as a CUDA graph and replayed: ``run.step=graph``.

ResNet-32 at batch 128 is a few hundred kernel launches of microseconds each per step; on a
large GPU the CPU that issues them sets the pace, not the GPU (docs/speed.md, "GPU"). Captured
in a CUDA graph, the whole step is one launch: the gather from the resident uint8 training set,
crop and flip, normalisation, mixup, forward, loss, backward, the callbacks before the step
(gradient clipping), the SGD step, the weight average and the epoch's loss sum.

How the captured run stays the run it would be uncaptured:

- **Static inputs.** What changes from step to step is a device tensor the graph reads. An
  epoch's randomness is drawn first, from the same generators in the same order as the eager
  step draws it (:meth:`~ncollapse.engine.batches.ResidentBatches.draws`: the same samples,
  crops, flips and mixup for the same seed), and copied to the device once per epoch, one row
  per step, with each step's learning rate and weight-average share; a step counter on the
  device, advanced by the graph, picks the row.
- **The last, smaller batch** of an epoch runs the same step uncaptured (its shapes differ),
  as do the first :data:`WARMUP_STEPS` steps of a session (they create the momentum buffers
  and let cuDNN settle). The step is captured once per kind (with and without the weight
  average) and again when the criterion changes what it holds (deferred re-weighting switching
  its class weights on).
- **Float rounding, not bits.** The rate and mixup's coefficient are read from device memory, so
  the SGD step is torch's fused one with a tensor rate and ``1 - lam`` is computed in float32:
  a captured run equals the eager run to float rounding. Captured and uncaptured steps are the
  same operations, so a resumed captured run is the uninterrupted one: from an epoch boundary,
  and from a checkpoint that a signal saved between two replays (the epoch's rows start at the
  step reached; :meth:`GraphStep.run_epoch`).

Where the step cannot be captured the run trains with the eager step, and one line says which
and why (:func:`graph_unavailable`): not on CUDA, under torchrun, streamed data, a loss with
extra batches or a running state, fp16 loss scaling, an optimiser other than SGD, a callback
that runs Python after every step. A capture that fails at run time is named the same way, and
the run goes on with the same step uncaptured.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..config import Config
from ..criterion import Batch
from ..registry import Registry
from .batches import BatchDraws, ResidentBatches, StepInput, not_resident_alone
from .callbacks import WeightAveraging
from .distributed import SINGLE
from .step import forward_loss

__all__ = ["STEPS", "WARMUP_STEPS", "GraphStep", "graph_unavailable", "state_signature"]

#: the :class:`~ncollapse.engine.loop.Trainer` a step serves (it imports this module)
Trainer = Any

#: how a run's training steps run (``run.step``): ``make(trainer)`` returns the
#: :class:`GraphStep` that trains its epochs, or None for the trainer's own eager step
STEPS: Registry[Callable[[Trainer], GraphStep | None]] = Registry(
    "training step", "run.step", config=Config
)

#: uncaptured steps at the start of every session before the step is captured
WARMUP_STEPS = 3


def graph_unavailable(trainer: Trainer) -> str | None:
    """Why ``trainer``'s step cannot be captured in a CUDA graph, in a few words (None: it can).
    Everything that can be known before training; a capture can still fail at run time."""
    t = trainer
    if t.device.type != "cuda":
        return f"CUDA graphs need a CUDA device and this run trains on the {t.device.type}"
    reason = not_resident_alone(t)
    if reason is not None:
        return reason
    if t.criterion.state_dict():
        return "the loss keeps a running state that it updates in Python"
    if t.scaler.is_enabled():
        return "fp16 loss scaling checks every step for overflow on the host (bf16 has none)"
    if not isinstance(t.optimizer, torch.optim.SGD):
        return f"only the sgd optimiser's step is captured (optim.optimizer={t.optim.optimizer})"
    python = [type(c).__name__ for c in t._step_hooks if not isinstance(c, WeightAveraging)]
    if python:
        return f"the callback {python[0]} runs Python after every step"
    return None


@STEPS.register("eager", default=True)
def _eager(trainer: Trainer) -> None:
    """each step as Python issues it, operation by operation"""
    return None


@STEPS.register("graph")
def _graph(trainer: Trainer) -> GraphStep | None:
    """the whole step captured once as a CUDA graph and replayed (CUDA only; elsewhere the eager
    step, with a one-line message saying why)"""
    reason = graph_unavailable(trainer)
    if reason is not None:
        warnings.warn(f"run.step=graph: {reason}; training with the eager step", stacklevel=2)
        return None
    return GraphStep(trainer)


def state_signature(obj: Any, depth: int = 4) -> Any:
    """What a captured graph reads of ``obj`` (a criterion): every tensor's address, shape and
    type, every number, string and flag, through its attributes and modules. A graph captured
    with one signature is stale under another."""
    if isinstance(obj, torch.Tensor):
        return ("tensor", obj.data_ptr(), tuple(obj.shape), str(obj.dtype), str(obj.device))
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if depth == 0:
        return ("object", id(obj))
    if isinstance(obj, (list, tuple)):
        return tuple(state_signature(v, depth - 1) for v in obj)
    if isinstance(obj, dict):
        return tuple((str(k), state_signature(v, depth - 1)) for k, v in obj.items())
    if isinstance(obj, torch.nn.Module):
        tensors = [*obj.named_parameters(), *obj.named_buffers()]
        plain = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        return (
            tuple((k, state_signature(v, 0)) for k, v in tensors),
            state_signature(plain, depth - 1),
        )
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, state_signature(vars(obj), depth - 1))
    return ("object", id(obj))


def _rows(
    draws: Sequence[BatchDraws], lrs: Sequence[float], shares: Sequence[float], device
) -> dict[str, torch.Tensor]:
    """The static inputs of the steps ``draws`` (one row each): sample indices, crop offsets
    and flips, mixup's partner permutation and coefficients (``lam`` and ``1 - lam``, each
    rounded once from the double the eager step multiplies by), the rate and the average's
    share. Without mixup: the identity and ``lam = 1`` (``1 * x + 0 * x`` is ``x``)."""
    n = draws[0].idx.numel()
    f32 = {"dtype": torch.float32}
    rows = {"idx": torch.stack([d.idx for d in draws]).to(device)}
    if draws[0].crop is not None:
        rows["dy"] = torch.stack([d.crop[0] for d in draws])  # type: ignore[index]
        rows["dx"] = torch.stack([d.crop[1] for d in draws])  # type: ignore[index]
        if draws[0].crop[2] is not None:
            rows["flip"] = torch.stack([d.crop[2] for d in draws])  # type: ignore[index,misc]
    if draws[0].mix is None:
        rows["perm"] = torch.arange(n).repeat(len(draws), 1)
        lam = [1.0] * len(draws)
    else:
        rows["perm"] = torch.stack([d.mix[1] for d in draws])  # type: ignore[index]
        lam = [d.mix[0] for d in draws]  # type: ignore[index]
    rows["lam"] = torch.tensor(lam, **f32)
    rows["oml"] = torch.tensor([1.0 - v for v in lam], **f32)
    rows["lr"] = torch.tensor(list(lrs), **f32)
    rows["ema"] = torch.tensor(list(shares), **f32)
    return {k: v.to(device) for k, v in rows.items()}


class GraphStep:
    """Trains a :class:`~ncollapse.engine.loop.Trainer`'s epochs with its step captured as a CUDA
    graph (see the module docstring). ``capture=False`` runs the very same step uncaptured: what
    a failed capture falls back to, and how the CPU tests check it against the eager step."""

    def __init__(self, trainer: Trainer, capture: bool = True) -> None:
        self.trainer = t = trainer
        self.capture = capture
        self.batches: ResidentBatches = t.batches
        b = self.batches
        self.size = b.batch_size
        self.full = min(b.images.shape[0] // b.batch_size, len(b))  # captured steps per epoch
        self.rows: dict[str, torch.Tensor] = {}
        self.counter = torch.zeros((), dtype=torch.long, device=t.device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=t.device)
        self.graphs: dict[bool, Any] = {}  # with the weight average or without -> its graph
        self.signature: Any = None
        self.warm = 0
        starts = [c.start for c in t.callbacks if isinstance(c, WeightAveraging)]
        self.ema_start = starts[0] if starts and t.average is not None else None

    # ------------------------------------------------------------------ one epoch
    def run_epoch(
        self, epoch: int, start: float, at: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, int, float]:
        """Train 0-based ``epoch``: ``(the loss sum on the device, samples seen, last rate)``.
        ``at``: the position of a checkpoint saved inside the epoch, whose steps are not done
        again (the epoch's numbers are drawn in full and its rows start at its step). A stop
        request (:meth:`~ncollapse.engine.loop.Trainer.request_stop`) saves such a checkpoint
        at the next step boundary, as the eager step does."""
        t = self.trainer
        signature = state_signature(t.criterion)
        if signature != self.signature:  # the criterion holds other tensors: capture again
            self.graphs.clear()
            self.signature = signature
        cpu = torch.device("cpu")
        draws = list(self.batches.draws(epoch, t.seed, t._mixup_alpha(epoch), device=cpu))
        nb = len(draws)
        per_batch = t.schedule.per_batch(t.optim, epoch)
        lrs = [t.schedule.lr(t.optim, epoch, (b + 1) / nb if per_batch else 1.0) for b in range(nb)]
        average = t.average
        ema = average is not None and self.ema_start is not None and epoch >= self.ema_start
        if ema and average.updates == 0:  # the average starts from the current weights
            average.reset(t.network)
        first = 0 if at is None else int(at["step"])  # the steps done before a resume
        shares = [
            average.weight(average.updates + max(b - first, 0)) if ema else 0.0 for b in range(nb)
        ]
        if self.full:
            rows = _rows(draws[: self.full], lrs, shares, t.device)
            if not self.rows:
                self.rows = rows
            else:
                for k, v in rows.items():
                    self.rows[k].copy_(v)
        self.counter.fill_(min(first, self.full))
        self.loss_sum.fill_(0.0 if at is None else float(at["loss_sum"][0]))
        seen = 0 if at is None else int(at["seen"])
        before = 0.0 if at is None else float(at["seconds"])
        for b, d in enumerate(draws):
            if b < first:
                continue
            if b < self.full:
                self._full_step(ema)
            else:  # the last, smaller batch: the same step, uncaptured
                row = _rows([d], lrs[b : b + 1], shares[b : b + 1], t.device)
                self._step({k: v[0] for k, v in row.items()}, ema)
            if ema:
                average.updates += 1
            seen += d.idx.numel()
            if t.progress.mode == "bar":
                elapsed = time.perf_counter() - start
                loss = float(self.loss_sum) / max(seen, 1)
                done = seen - (0 if at is None else int(at["seen"]))
                t.progress.batch(
                    epoch, b + 1, nb, loss, done / max(elapsed, 1e-9), before + elapsed
                )
            if t.stop_signal is not None:  # one process: no other rank to agree with
                for group in t.optimizer.param_groups:  # the rate an eager step leaves
                    group["lr"] = lrs[b]
                partial = {
                    "loss_sum": float(self.loss_sum),
                    "seen": seen,
                    "counted": seen,
                    "seconds": before + time.perf_counter() - start,
                    "lr": lrs[b],
                }
                t._preempt(epoch, b + 1, partial)
        for group in t.optimizer.param_groups:
            group["lr"] = lrs[-1]
        return self.loss_sum, seen, lrs[-1]

    def _full_step(self, ema: bool) -> None:
        if not self.capture:
            self._row_step(ema)
        elif self.warm < WARMUP_STEPS:
            self._warm_step(ema)
        elif ema in self.graphs or self._capture(ema):
            self.graphs[ema].replay()
        else:  # the capture failed: this step and the rest uncaptured
            self._row_step(ema)

    def _warm_step(self, ema: bool) -> None:
        """An uncaptured step on a side stream, as CUDA graphs want their warm-up."""
        side = torch.cuda.Stream(self.trainer.device)
        side.wait_stream(torch.cuda.current_stream(self.trainer.device))
        with torch.cuda.stream(side):
            self._row_step(ema)
        torch.cuda.current_stream(self.trainer.device).wait_stream(side)
        self.warm += 1

    def _capture(self, ema: bool) -> bool:
        graph = torch.cuda.CUDAGraph()
        self.trainer.optimizer.zero_grad(set_to_none=True)  # gradients live in the graph's pool
        try:
            with torch.cuda.graph(graph):
                self._row_step(ema)
        except Exception as exc:  # any failure: say which, and go on uncaptured
            text = str(exc).strip().splitlines()
            warnings.warn(
                f"run.step=graph: the training step could not be captured as a CUDA graph "
                f"({type(exc).__name__}: {text[0] if text else 'no message'}); the run goes on "
                "with the same step uncaptured",
                stacklevel=2,
            )
            self.capture = False
            self.trainer.optimizer.zero_grad(set_to_none=True)
            return False
        self.graphs[ema] = graph
        return True

    # ------------------------------------------------------------------ the step itself
    def _row_step(self, ema: bool) -> None:
        """The step of the row the device counter points at, then the counter advanced."""
        i = self.counter.view(1)
        self._step({k: v.index_select(0, i)[0] for k, v in self.rows.items()}, ema)
        self.counter.add_(1)

    def _step(self, row: dict[str, torch.Tensor], ema: bool) -> None:
        """One training step from its static inputs: tensor operations of fixed shapes only."""
        t = self.trainer
        b = self.batches
        crop = (row["dy"], row["dx"], row.get("flip")) if "dy" in row else None
        idx, perm = row["idx"], row["perm"]
        x = b.prepare(idx, crop)
        x = row["lam"] * x + row["oml"] * x[perm]  # mixup (the identity without it)
        y = b.labels[idx]
        step = StepInput(x, Batch(y, y[perm], row["lam"]), {}, idx.numel())  # type: ignore[arg-type]
        loss, share, _ = forward_loss(
            t.model,
            t.criterion,
            step,
            amp_dtype=t.amp_dtype,
            device_type=t.device.type,
            dist=SINGLE,
            autocast_cache=False,
        )
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for callback in t._before_step_hooks:
            callback.on_before_step(t)
        self._sgd(row["lr"])
        if ema:
            t.average.blend(t.network, row["ema"])
        self.loss_sum.add_(share)

    def _sgd(self, lr: torch.Tensor) -> None:
        """The trainer's SGD step with the rate read from the device (torch's fused SGD, which
        takes a tensor rate); the parameter groups are left as they were."""
        groups = self.trainer.optimizer.param_groups
        kept = [(g["lr"], g["fused"], g["foreach"]) for g in groups]
        try:
            for g in groups:
                g.update(lr=lr, fused=True, foreach=False)
            self.trainer.optimizer.step()
        finally:
            for g, (rate, fused, foreach) in zip(groups, kept):
                g.update(lr=rate, fused=fused, foreach=foreach)
