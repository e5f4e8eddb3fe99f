"""The training and evaluation loop.

The loop knows no head, no loss and no method. It gets, already built by the composition layer:

- a network: ``network(x) -> HeadOutput(features, logits)``, with ``classifier_weight()`` and
  ``classifier_bias()`` for the collapse metrics;
- a criterion (:class:`ncollapse.losses.Criterion`): ``criterion(batch, out) -> loss``, with
  ``set_epoch``, ``state_dict``/``load_state_dict`` and ``sampling_weights`` for extra batches;
- the data bundle and the resolved augmentation (a :class:`~ncollapse.data.BatchAugment`);
- small settings objects: the ``optim``, ``eval`` and ``run`` sections of the config;
- an :class:`~ncollapse.engine.evaluate.Evaluator` and the :class:`~ncollapse.rundir.Run`.

Data stays resident as uint8 tensors on the training device; each batch is one gather, one
batched augmentation and one forward (extra batches are forwarded together with the main one).

Randomness is derived per epoch from the training seed (data order, crops, flips, mixup), so a
run resumed from its epoch-``e`` checkpoint draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..criterion import Batch, Criterion
from ..data.augment import BatchAugment
from ..data.base import DataBundle
from ..rundir import Run
from .evaluate import Evaluator
from .mixup import mixup_batch
from .progress import Progress
from .schedule import lr_at_epoch, ramps_per_batch
from .tensorboard import EventWriter

__all__ = ["Trainer", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is a clear error."""
    from ..errors import UserError

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
    """The CPU torch generator and NumPy generator of one epoch, derived from the seed alone."""
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
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs ``optim.epochs`` epochs of SGD on ``data.train`` and evaluates on ``data.test``."""

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
        augment: BatchAugment,
        run_dir: Run | None,
        device: torch.device,
        evaluator: Evaluator,
        progress: Progress | None = None,
        name: str = "run",
    ) -> None:
        self.name = name
        self.optim = optim
        self.eval_cfg = evaluation
        self.run_cfg = run
        self.seed = int(seed)
        self.device = device
        self.network = network.to(device)
        self.criterion = criterion.to(device)
        self.data = data
        self.run_dir = run_dir
        self.evaluator = evaluator
        self.progress = progress or Progress(optim.epochs, run.progress)
        self.state = TrainState()

        self.train_x = data.train.images.to(device)
        self.train_y = data.train.labels.to(device)
        self.test_x = data.test.images.to(device)
        self.test_y = data.test.labels.to(device)
        self.augment = augment

        # NHWC layout: oneDNN (CPU) and cuDNN (AMP) run 3x3 convolutions much faster in it
        self.memory_format = torch.preserve_format
        if run.channels_last and self.train_x.dim() == 4:
            self.memory_format = torch.channels_last
            self.network.to(memory_format=torch.channels_last)
        params = [p for p in self.network.parameters() if p.requires_grad]
        o = optim
        self.optimizer = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        self.amp_dtype: torch.dtype | None = None
        if device.type == "cuda" and run.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.tb: EventWriter | None = None  # opened by fit(), in the run directory
        # extra batches the criterion asked for (name -> per-sample weights, with replacement)
        self.extra_weights = {
            name: torch.as_tensor(w, dtype=torch.float32)
            for name, w in (criterion.sampling_weights or {}).items()
        }
        self.collapse_state: Any = None  # the train split's last accumulator (for the plots)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}  # noqa: NPY002
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": 2,
            "epoch": self.state.epoch,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "criterion": self.criterion.state_dict(),
            "trainer": {
                "best_acc": self.state.best_acc,
                "best_epoch": self.state.best_epoch,
                "train_seconds": self.state.train_seconds,
                "wall_seconds": self.state.wall_seconds,
            },
            "rng": rng,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.network.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("criterion"):
            self.criterion.load_state_dict(ckpt["criterion"])
        t = ckpt["trainer"]
        self.state.epoch = int(ckpt["epoch"])
        self.state.best_acc = float(t["best_acc"])
        self.state.best_epoch = int(t["best_epoch"])
        self.state.train_seconds = float(t["train_seconds"])
        self.state.wall_seconds = float(t.get("wall_seconds", 0.0))  # absent from older checkpoints
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])  # noqa: NPY002
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)

    # ------------------------------------------------------------------ training
    def _set_lr(self, epoch: int, progress: float = 1.0) -> float:
        o = self.optim
        lr = lr_at_epoch(epoch, o.lr, o.warmup_epochs, o.milestones, o.gamma, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _prepare(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = self.augment(x, g)
        return x.contiguous(memory_format=self.memory_format)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set (0-based ``epoch``); returns the train record."""
        self.network.train()
        self.criterion.set_epoch(epoch)
        g, rng = epoch_generators(self.seed, epoch)
        n = self.train_x.shape[0]
        bs = self.optim.batch_size
        perm = torch.randperm(n, generator=g).to(self.device)
        num_batches = math.ceil(n / bs)
        per_batch = ramps_per_batch(epoch, self.optim.warmup_epochs)
        lr = self._set_lr(epoch)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        start = time.perf_counter()
        for b in range(num_batches):
            if per_batch:
                lr = self._set_lr(epoch, (b + 1) / num_batches)
            idx = perm[b * bs : (b + 1) * bs]
            x = self._prepare(self.train_x[idx], g)
            y = self.train_y[idx]
            x, y_a, y_b, lam = mixup_batch(x, y, self.optim.mixup_alpha, g, rng)
            extra = {}
            for name, weights in self.extra_weights.items():
                eidx = torch.multinomial(weights, idx.numel(), replacement=True, generator=g)
                eidx = eidx.to(self.device)
                extra[name] = (self._prepare(self.train_x[eidx], g), self.train_y[eidx])
            loss = self._step(x, Batch(y_a, y_b, lam), extra)
            loss_sum += loss.detach().double() * idx.numel()
            seen += idx.numel()
            if self.progress.mode == "bar":
                elapsed = time.perf_counter() - start
                self.progress.batch(
                    epoch,
                    b + 1,
                    num_batches,
                    float(loss_sum) / seen,
                    seen / max(elapsed, 1e-9),
                    elapsed,
                )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        mean_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean_loss):
            from ..errors import UserError

            raise UserError(
                f"the training loss became {mean_loss} in epoch {epoch + 1}; lower optim.lr "
                f"(now {self.optim.lr}) or check the data (the last good checkpoint is kept)"
            )
        return {
            "kind": "train",
            "epoch": epoch + 1,
            "loss": mean_loss,
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9),
        }

    def _step(
        self, x: torch.Tensor, batch: Batch, extra: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Forward the batch (and any extra batches, in one forward), the loss, one SGD step."""
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )
        with autocast:
            if not extra:
                out = self.network(x)
            else:
                sizes = [x.shape[0], *(ex[0].shape[0] for ex in extra.values())]
                both = self.network(torch.cat([x, *(ex[0] for ex in extra.values())]))
                parts = list(zip(*(t.split(sizes) for t in both)))
                out = type(both)(*parts[0])
                for (name, (_, y_extra)), part in zip(extra.items(), parts[1:]):
                    batch.extra[name] = (type(both)(*(t.float() for t in part)), y_extra)
        out = type(out)(*(t.float() for t in out))
        loss = self.criterion(batch, out)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def iterate_outputs(
        self, split: str
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(features, logits, labels)`` over a split in eval mode, without augmentation."""
        self.network.eval()
        xs, ys = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        bs = self.eval_cfg.batch_size
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )
        for i in range(0, xs.shape[0], bs):
            with autocast:
                x = self.augment.normalize(xs[i : i + bs]).contiguous(
                    memory_format=self.memory_format
                )
                out = self.network(x)
            yield out.features.float(), out.logits.float(), ys[i : i + bs]

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Test-set accuracy record: overall, per class, many/medium/few by count and by index."""
        acc = self.evaluator.accuracy(self.iterate_outputs("test"))
        return {"kind": "eval", "epoch": epoch, "split": "test", **acc}

    def collapse(self, epoch: int) -> list[dict[str, Any]]:
        """Neural-collapse records on the splits asked for (eval mode, no augmentation)."""
        net = self.network
        out = []
        for split in self.eval_cfg.collapse_splits:
            values, acc = self.evaluator.collapse(
                lambda s=split: self.iterate_outputs(s),
                net.classifier_weight(),
                net.classifier_bias(),
                device=self.device,
            )
            if split == "train":
                self.collapse_state = acc
            out.append({"kind": "collapse", "epoch": epoch, "split": split, **values})
        return out

    # ------------------------------------------------------------------ the run
    def _log(self, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)
        if self.tb is not None:
            prefix = (
                record["kind"]
                if record["kind"] == "train"
                else f"{record['kind']}_{record['split']}"
            )
            self.tb.add_scalars(prefix, record, record["epoch"])

    def fit(self) -> dict[str, Any]:
        """Train from ``self.state.epoch`` to the end; returns the summary written to summary.json."""
        epochs = self.optim.epochs
        if self.run_dir is None:
            raise ValueError("Trainer.fit needs a run directory (run_dir) to write to")
        if self.run_cfg.tensorboard and self.tb is None:
            self.tb = EventWriter(self.run_dir.tensorboard_dir)
        last_eval: dict[str, Any] | None = None
        last_collapse: list[dict[str, Any]] = []
        for epoch in range(self.state.epoch, epochs):
            epoch_start = time.perf_counter()
            rec = self.train_epoch(epoch)
            self.state.train_seconds += rec["seconds"]
            self._log(rec)
            e1 = epoch + 1
            summary = f"loss {rec['loss']:.4f} lr {rec['lr']:.4g} {rec['images_per_s']:,.0f} img/s"
            if e1 % self.eval_cfg.every == 0 or e1 == epochs:
                last_eval = self.evaluate(e1)
                self._log(last_eval)
                if last_eval["acc"] > self.state.best_acc:
                    self.state.best_acc, self.state.best_epoch = last_eval["acc"], e1
                summary += f" | test acc {100 * last_eval['acc']:.2f}%"
            ce = self.eval_cfg.collapse_every
            if (ce and e1 % ce == 0) or e1 == epochs:
                last_collapse = self.collapse(e1)
                for r in last_collapse:
                    self._log(r)
            self.state.epoch = e1
            self.state.wall_seconds += time.perf_counter() - epoch_start
            if e1 % self.run_cfg.checkpoint_every == 0 or e1 == epochs:
                self.run_dir.save_checkpoint(self.state_dict())
            self.progress.epoch(epoch, rec["seconds"], summary)
        if last_eval is None:  # resumed a finished run: report what it has
            evals = [r for r in self.run_dir.metrics() if r.get("kind") == "eval"]
            last_eval = evals[-1] if evals else self.evaluate(self.state.epoch)
            last_collapse = [
                r
                for r in self.run_dir.metrics()
                if r.get("kind") == "collapse" and r["epoch"] == last_eval["epoch"]
            ]
        summary = {
            "name": self.name,
            "epochs": epochs,
            "final": {k: v for k, v in last_eval.items() if k not in ("kind", "split")},
            "best_test_selected": {
                "note": "chosen on the test set; report 'final' as the result",
                "epoch": self.state.best_epoch,
                "acc": self.state.best_acc,
            },
            "collapse": {
                r["split"]: {k: v for k, v in r.items() if k not in ("kind", "split")}
                for r in last_collapse
            },
            "train_seconds": self.state.train_seconds,
            "wall_seconds": self.state.wall_seconds,
            "device": str(self.device),
            "host": platform.node(),
        }
        self.run_dir.write_summary(summary)
        self.run_dir.save_model(self.network.state_dict())
        if self.collapse_state is not None:  # final class means and classifier, for plots
            self.run_dir.save_collapse_state(
                self.collapse_state, classifier=self.network.classifier_weight().detach().cpu()
            )
        if self.tb is not None:
            self.tb.close()
        return summary
