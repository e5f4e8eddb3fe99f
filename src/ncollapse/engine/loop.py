"""The training and evaluation loop.

The loop knows nothing about heads or losses: it gets a network (``x -> HeadOutput``) and a
criterion (``(out, y_a, y_b, lam) -> loss``) already built. Data stays resident as uint8 tensors
on the training device; each batch is one gather, one batched augmentation and one forward.

Randomness is derived per epoch from the training seed (data order, crops, flips, mixup), so a
run resumed from its epoch-``e`` checkpoint draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, config_to_dict
from ..data.augment import BatchAugment
from ..data.base import DataBundle
from ..metrics import long_tail_accuracy
from .mixup import mixup_batch
from .progress import Progress
from .rundir import RunDir
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
    """Runs ``cfg.optim.epochs`` epochs of SGD on ``bundle.train`` and evaluates on ``bundle.test``."""

    def __init__(
        self,
        cfg: Config,
        network: nn.Module,
        criterion: Any,
        bundle: DataBundle,
        run_dir: RunDir,
        device: torch.device,
        progress: Progress | None = None,
        collapse_fn: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.network = network.to(device)
        self.criterion = criterion.to(device) if hasattr(criterion, "to") else criterion
        self.bundle = bundle
        self.run_dir = run_dir
        self.progress = progress or Progress(cfg.optim.epochs, cfg.run.progress)
        self.collapse_fn = collapse_fn
        self.state = TrainState()

        self.train_x = bundle.train.images.to(device)
        self.train_y = bundle.train.labels.to(device)
        self.test_x = bundle.test.images.to(device)
        self.test_y = bundle.test.labels.to(device)
        augment = cfg.data.augment if cfg.data.augment != "auto" else bundle.augment
        self.augment = BatchAugment(bundle.mean, bundle.std, crop_padding=4, flip=True)
        self.use_augment = augment == "standard"

        # NHWC layout: oneDNN (CPU) and cuDNN (AMP) run 3x3 convolutions much faster in it
        self.memory_format = torch.preserve_format
        if cfg.run.channels_last and self.train_x.dim() == 4:
            self.memory_format = torch.channels_last
            self.network.to(memory_format=torch.channels_last)
        params = [p for p in self.network.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        self.amp_dtype: torch.dtype | None = None
        if device.type == "cuda" and cfg.run.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.tb = EventWriter(run_dir.path / "tb") if cfg.run.tensorboard else None
        self._reversed_weights: torch.Tensor | None = None
        if getattr(self.criterion, "needs_reversed_batch", False):
            # a criterion that trains on a second, re-sampled batch says how to sample it
            weights = self.criterion.sampling_weights(bundle.class_counts, bundle.train.labels)
            self._reversed_weights = torch.as_tensor(weights, dtype=torch.float32)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        crit_state = self.criterion.state_dict() if hasattr(self.criterion, "state_dict") else None
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}  # noqa: NPY002
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": 1,
            "epoch": self.state.epoch,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "criterion": crit_state,
            "trainer": {
                "best_acc": self.state.best_acc,
                "best_epoch": self.state.best_epoch,
                "train_seconds": self.state.train_seconds,
                "wall_seconds": self.state.wall_seconds,
            },
            "rng": rng,
            "config": config_to_dict(self.cfg),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.network.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("criterion") is not None and hasattr(self.criterion, "load_state_dict"):
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
        o = self.cfg.optim
        lr = lr_at_epoch(epoch, o.lr, o.warmup_epochs, o.milestones, o.gamma, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _prepare(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = self.augment(x, g) if self.use_augment else self.augment.normalize(x)
        return x.contiguous(memory_format=self.memory_format)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set (0-based ``epoch``); returns the train record."""
        self.network.train()
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(epoch)
        g, rng = epoch_generators(self.cfg.seed, epoch)
        n = self.train_x.shape[0]
        bs = self.cfg.optim.batch_size
        perm = torch.randperm(n, generator=g).to(self.device)
        num_batches = math.ceil(n / bs)
        per_batch = ramps_per_batch(epoch, self.cfg.optim.warmup_epochs)
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
            x, y_a, y_b, lam = mixup_batch(x, y, self.cfg.optim.mixup_alpha, g, rng)
            rev = None
            if self._reversed_weights is not None:
                ridx = torch.multinomial(
                    self._reversed_weights, idx.numel(), replacement=True, generator=g
                )
                ridx = ridx.to(self.device)
                rev = (self._prepare(self.train_x[ridx], g), self.train_y[ridx])
            loss = self._step(x, y_a, y_b, lam, rev, epoch)
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
                f"(now {self.cfg.optim.lr}) or check the data (the last good checkpoint is kept)"
            )
        return {
            "kind": "train",
            "epoch": epoch + 1,
            "loss": mean_loss,
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9),
        }

    def _step(self, x, y_a, y_b, lam, rev, epoch) -> torch.Tensor:
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )
        with autocast:
            if rev is None:
                out = self.network(x)
            else:
                both = self.network(torch.cat([x, rev[0]]))
                k = x.shape[0]
                out = type(both)(*(t[:k] for t in both))
                out_rev = type(both)(*(t[k:] for t in both))
        out = type(out)(*(t.float() for t in out))
        if rev is None:
            loss = self.criterion(out, y_a, y_b, lam)
        else:
            out_rev = type(out_rev)(*(t.float() for t in out_rev))
            loss = self.criterion(out, y_a, y_b, lam, rev=(out_rev, rev[1]), network=self.network)
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
        bs = self.cfg.eval.batch_size
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
        preds, labels = [], []
        for _, logits, y in self.iterate_outputs("test"):
            if self.cfg.loss.posthoc_tau is not None:
                from ..losses import posthoc_logit_adjust

                logits = posthoc_logit_adjust(
                    logits, self.bundle.class_counts, self.cfg.loss.posthoc_tau
                )
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
        acc = long_tail_accuracy(torch.cat(preds), torch.cat(labels), self.bundle.class_counts)
        return {"kind": "eval", "epoch": epoch, "split": "test", **acc}

    def collapse(self, epoch: int) -> list[dict[str, Any]]:
        """Neural-collapse records on the train set and the test set (eval mode, no augmentation)."""
        if self.collapse_fn is None:
            return []
        out = []
        for split in self.cfg.eval.collapse_splits:
            values = self.collapse_fn(self, split)
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
        cfg = self.cfg
        epochs = cfg.optim.epochs
        last_eval: dict[str, Any] | None = None
        last_collapse: list[dict[str, Any]] = []
        for epoch in range(self.state.epoch, epochs):
            epoch_start = time.perf_counter()
            rec = self.train_epoch(epoch)
            self.state.train_seconds += rec["seconds"]
            self._log(rec)
            e1 = epoch + 1
            summary = f"loss {rec['loss']:.4f} lr {rec['lr']:.4g} {rec['images_per_s']:,.0f} img/s"
            if e1 % cfg.eval.every == 0 or e1 == epochs:
                last_eval = self.evaluate(e1)
                self._log(last_eval)
                if last_eval["acc"] > self.state.best_acc:
                    self.state.best_acc, self.state.best_epoch = last_eval["acc"], e1
                summary += f" | test acc {100 * last_eval['acc']:.2f}%"
            ce = cfg.eval.collapse_every
            if (ce and e1 % ce == 0) or e1 == epochs:
                last_collapse = self.collapse(e1)
                for r in last_collapse:
                    self._log(r)
            self.state.epoch = e1
            self.state.wall_seconds += time.perf_counter() - epoch_start
            if e1 % cfg.run.checkpoint_every == 0 or e1 == epochs:
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
            "name": cfg.name,
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
        self.run_dir.write_json("summary.json", summary)
        torch.save(self.network.state_dict(), self.run_dir.path / "model.pt")
        if self.tb is not None:
            self.tb.close()
        return summary
