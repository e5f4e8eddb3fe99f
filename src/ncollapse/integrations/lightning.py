"""Neural collapse measured during Lightning training (``pip install 'ncollapse[lightning]'``)::

    from ncollapse.integrations.lightning import CollapseCallback

    trainer = lightning.Trainer(callbacks=[CollapseCallback(val_loader, every_n_epochs=5)])

Every ``every_n_epochs`` epochs and at the last one, :class:`CollapseCallback` passes the
model (in evaluation mode, without gradients) over its dataloader twice, as the ncollapse engine
does: the class statistics first, then NC4 against those means. It reads the features and
logits at the model's classifier (an :class:`~ncollapse.ETFClassifier`, an ncollapse head or
the last ``nn.Linear``) with a forward hook, so the model needs no change, and logs NC1-NC4,
the ETF errors and the minority-collapse indices as ``collapse/<name>`` (every logger sees
them); ``callback.history`` keeps them per epoch. The numbers are those of
:func:`ncollapse.collapse_metrics` on the same features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the extra is not installed
    try:
        import pytorch_lightning as pl  # the older package name
    except ImportError as exc:
        raise ImportError(
            "ncollapse.integrations.lightning needs Lightning: pip install "
            "'ncollapse[lightning]' (or pip install lightning)"
        ) from exc

from ..metrics import CollapseAccumulator
from . import classifier_weight, features_and_logits, find_classifier, scalars

__all__ = ["CollapseCallback"]


class CollapseCallback(pl.Callback):
    """Measure neural collapse on ``dataloader`` every ``every_n_epochs`` epochs (and after the
    last epoch) and log it.

    Args:
        dataloader: batches ``(inputs, labels, ...)``; the inputs go to the LightningModule's
            ``forward``.
        every_n_epochs: how often (in training epochs).
        classifier: the classifier module, or its name in the LightningModule (``"fc"``);
            default: found (:func:`ncollapse.integrations.find_classifier`).
        num_classes: K (default: the classifier's rows).
        tail_classes: the classes of the minority-collapse indices (default: from the counts
            of the measured data).
        prefix: of the logged names.
    """

    def __init__(
        self,
        dataloader: Iterable[Any],
        every_n_epochs: int = 1,
        *,
        classifier: nn.Module | str | None = None,
        num_classes: int | None = None,
        tail_classes: Sequence[int] | None = None,
        prefix: str = "collapse/",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.dataloader = dataloader
        self.every_n_epochs = int(every_n_epochs)
        self.classifier = classifier
        self.num_classes = num_classes
        self.tail_classes = None if tail_classes is None else list(tail_classes)
        self.prefix = prefix
        #: ``{"epoch": e, <metric>: value, ...}`` for every measurement, 1-based epochs
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        values = self.measure(pl_module)
        logged = scalars(values)
        self.history.append({"epoch": epoch, **values})
        pl_module.log_dict(
            {self.prefix + k: v for k, v in logged.items()},
            on_step=False,
            on_epoch=True,
            sync_dist=False,
        )

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, Any]:
        """The collapse metrics of ``model`` on the dataloader (two passes, evaluation mode)."""
        head = find_classifier(model, self.classifier)
        weight, bias = classifier_weight(head)
        k = self.num_classes or weight.shape[0]
        seen: list[tuple[Tensor, Tensor]] = []
        hook = head.register_forward_hook(lambda m, i, o: seen.append(features_and_logits(m, i, o)))
        was_training = model.training
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        acc: CollapseAccumulator | None = None
        try:
            for second in (False, True):
                for batch in self.dataloader:
                    x, y = batch[0], batch[1]
                    seen.clear()
                    model(x.to(device))
                    if not seen:
                        raise ValueError(
                            f"the classifier {type(head).__name__} did not run in the model's "
                            "forward; pass classifier= the module that makes the logits"
                        )
                    h, logits = seen[-1]
                    if acc is None:
                        acc = CollapseAccumulator(k, h.shape[1], device=h.device)
                    if second:
                        acc.update_nc4(h.float(), y.to(h.device), logits=logits.float())
                    else:
                        acc.update(h.float(), y.to(h.device))
        finally:
            hook.remove()
            model.train(was_training)
        if acc is None:
            raise ValueError("the collapse dataloader yielded no batch")
        return acc.compute(classifier=weight.float(), bias=bias, tail_classes=self.tail_classes)
