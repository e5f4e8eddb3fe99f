"""The training and evaluation loop.

The loop knows no head, no loss and no method. It gets, already built by the composition layer:

- a network: ``network(x) -> HeadOutput(features, logits)``, with ``classifier_weight/bias()``;
- a criterion (:class:`ncollapse.criterion.Criterion`): ``criterion(batch, out) -> loss``, with
  ``set_epoch``, ``state_dict``/``load_state_dict`` and ``sampling_weights`` for extra batches;
- the data bundle and the resolved augmentation (a :class:`~ncollapse.data.BatchAugment`);
- the ``optim``, ``eval`` and ``run`` sections of the config, an
  :class:`~ncollapse.engine.evaluate.Evaluator` and the :class:`~ncollapse.rundir.Run`.

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
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..criterion import Criterion
from ..data.augment import BatchAugment
from ..data.base import DataBundle
from ..errors import UserError
from ..rundir import Run
from .batches import StepInput
from .distributed import SINGLE, Distributed
from .ema import WeightAverage
from .evaluate import Evaluator, network_outputs
from .guard import check_finite
from .optimizers import build_optimizer
from .precision import autocast_dtype
from .progress import Progress
from .schedule import lr_at, ramps_per_batch
from .sources import Splits
from .state import TrainState, epoch_generators, resolve_device
from .step import forward_loss, sees_global_batch
from .syncbn import convert_sync_batchnorm
from .tensorboard import EventWriter

__all__ = ["Trainer", "epoch_generators", "resolve_device"]


class Trainer:
    """Runs ``optim.epochs`` epochs of SGD on ``data.train`` and evaluates on ``data.test``
    (and ``data.val``)."""

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
        run_dir: Run | None,
        device: torch.device,
        evaluator: Evaluator,
        progress: Progress | None = None,
        name: str = "run",
        dist: Distributed = SINGLE,
        workers: int = 0,
    ) -> None:
        self.name = name
        self.optim = optim
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
        self.run_dir = run_dir
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
        params = [p for p in self.network.parameters() if p.requires_grad]
        o = optim
        self.optimizer = build_optimizer(params, o)  # optim.optimizer, SGD by default
        self.amp_dtype = autocast_dtype(device, run.amp)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=device.type == "cuda" and self.amp_dtype == torch.float16
        )
        self.ema = WeightAverage(self.network, o.ema) if o.ema > 0 else None
        self.tb: EventWriter | None = None  # opened by fit(), in the run directory
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
        self._last_saved = 0  # the epoch of the last checkpoint written (0: none)

    @property
    def precision(self) -> str:
        """What the training steps compute in: ``fp32``, ``bf16`` or ``fp16`` (autocast)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def eval_network(self) -> nn.Module:
        """The weights that are evaluated and saved: the running average when there is one."""
        if self.ema is not None and self.ema.updates > 0:
            return self.ema.module
        return self.network

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
            "ema": None if self.ema is None else self.ema.state_dict(),
            "trainer": self.state.to_dict(),
            "rng": rng,
        }

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
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        self.state.load(ckpt["epoch"], ckpt["trainer"])
        self._last_saved = self.state.epoch
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])  # noqa: NPY002
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)

    # ------------------------------------------------------------------ training
    def _set_lr(self, epoch: int, progress: float = 1.0) -> float:
        lr = lr_at(self.optim, epoch, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _mixup_alpha(self, epoch: int) -> float:
        until = self.optim.mixup_epochs
        return self.optim.mixup_alpha if until is None or epoch < until else 0.0

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set (0-based ``epoch``); returns the train record."""
        self.network.train()
        self.criterion.set_epoch(epoch)
        num_batches = len(self.batches)
        per_batch = ramps_per_batch(epoch, self.optim.warmup_epochs, self.optim.schedule)
        average = self.ema is not None and epoch >= self.optim.ema_start
        lr = self._set_lr(epoch, 0.0 if self.optim.schedule != "step" else 1.0)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = counted = 0
        start = time.perf_counter()
        steps = self.batches.epoch(epoch, self.seed, self._mixup_alpha(epoch))
        for b, step in enumerate(steps):
            if per_batch:
                lr = self._set_lr(epoch, (b + 1) / num_batches)
            share, n = self._step(step)
            if average:
                if self.ema.updates == 0:  # the average starts from the current weights
                    self.ema.reset(self.network)
                self.ema.update(self.network)
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
                    seen / max(elapsed, 1e-9),
                    elapsed,
                )
        if self.dist.enabled:  # the loss over all ranks; rank 0's BatchNorm statistics everywhere
            loss_sum = self.dist.all_reduce_sum(loss_sum)
            self.dist.sync_buffers(self.network)
            if self.ema is not None:
                self.dist.sync_buffers(self.ema.module)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return {
            "kind": "train",
            "epoch": epoch + 1,
            "loss": float(loss_sum) / max(seen, 1),
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9),
        }

    def _step(self, step: StepInput) -> tuple[torch.Tensor, int]:
        """Forward the batch (and any extra batches, in one forward), the loss, one SGD step;
        returns this rank's share of the epoch's loss sum and the samples it counts
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
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return share, counted

    def _check_finite(self, rec: dict[str, Any]) -> None:
        check_finite(self, rec)

    # ------------------------------------------------------------------ evaluation
    def iterate_outputs(
        self, split: str, tta: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(features, logits, labels)`` of the evaluated weights over a split (``train``,
        ``test`` or ``val``; this rank's share under torchrun) in eval mode, without
        augmentation, in float32."""
        batches = self.splits.eval_batches(split, self.eval_cfg.batch_size)
        return network_outputs(self.eval_network, batches, tta=tta)

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
    def _log(self, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)
        if self.tb is not None:
            kind = record["kind"]
            prefix = kind if kind == "train" else f"{kind}_{record['split']}"
            self.tb.add_scalars(prefix, record, record["epoch"])

    def fit(self) -> dict[str, Any]:
        """Train from ``self.state.epoch`` to the end; returns the summary written to summary.json."""
        epochs = self.optim.epochs
        if self.run_dir is None:
            raise ValueError("Trainer.fit needs a run directory (run_dir) to write to")
        if self.run_cfg.tensorboard and self.tb is None and getattr(self.run_dir, "writes", True):
            self.tb = EventWriter(self.run_dir.tensorboard_dir)
        evals: dict[str, dict[str, Any]] = {}
        last_collapse: list[dict[str, Any]] = []
        every = self.eval_cfg.every
        for epoch in range(self.state.epoch, epochs):
            epoch_start = time.perf_counter()
            rec = self.train_epoch(epoch)
            self._check_finite(rec)
            self.state.train_seconds += rec["seconds"]
            self._log(rec)
            e1 = epoch + 1
            summary = f"loss {rec['loss']:.4f} lr {rec['lr']:.4g} {rec['images_per_s']:,.0f} img/s"
            if (every and e1 % every == 0) or e1 == epochs:
                for r in self.evaluate(e1):
                    self._log(r)
                    evals[r["split"]] = r
                    summary += f" | {r['split']} acc {100 * r['acc']:.2f}%"
                test = evals.get("test")
                if test is not None and test["epoch"] == e1 and test["acc"] > self.state.best_acc:
                    self.state.best_acc, self.state.best_epoch = test["acc"], e1
            ce = self.eval_cfg.collapse_every
            if (ce and e1 % ce == 0) or e1 == epochs:
                last_collapse = self.collapse(e1)
                for r in last_collapse:
                    self._log(r)
            self.state.epoch = e1
            self.state.wall_seconds += time.perf_counter() - epoch_start
            if e1 % self.run_cfg.checkpoint_every == 0 or e1 == epochs:
                self.run_dir.save_checkpoint(self.state_dict())
                self._last_saved = e1
            self.progress.epoch(epoch, rec["seconds"], summary)
        if not evals:  # resumed a finished run: report what it has
            records = self.run_dir.metrics()
            for r in records:
                if r.get("kind") == "eval":
                    evals[r.get("split", "test")] = r
            if not evals:
                evals = {r["split"]: r for r in self.evaluate(self.state.epoch)}
            last = max(r["epoch"] for r in evals.values())
            last_collapse = [
                r for r in records if r.get("kind") == "collapse" and r["epoch"] == last
            ]
        return self._finish(epochs, evals, last_collapse)

    def _finish(
        self, epochs: int, evals: dict[str, dict[str, Any]], collapse: list[dict[str, Any]]
    ) -> dict[str, Any]:
        def strip(r: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if r is None else {k: v for k, v in r.items() if k not in ("kind", "split")}

        summary = {
            "name": self.name,
            "epochs": epochs,
            "final": strip(evals.get("test")) or {},
            "collapse": {r["split"]: strip(r) for r in collapse},
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
        if "val" in evals:
            summary["val"] = strip(evals["val"])
        self.run_dir.write_summary(summary)
        net = self.eval_network
        self.run_dir.save_model(net.state_dict())
        if self.collapse_state is not None:  # final class means and classifier, for plots
            self.run_dir.save_collapse_state(
                self.collapse_state, classifier=net.classifier_weight().detach().cpu()
            )
        if self.tb is not None:
            self.tb.close()
        return summary
