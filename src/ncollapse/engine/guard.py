"""The guard against divergence: a checkpoint is only ever a good state.

After every epoch, before anything is evaluated or saved, the mean loss and every floating-point
weight and BatchNorm buffer must be finite; otherwise the run stops with a message naming the
epoch whose checkpoint is kept (or that none is) and what to do. A mean loss that has grown by
:data:`BLOWUP_FACTOR` over the first epoch's is reported once as a warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..errors import UserError

__all__ = ["BLOWUP_FACTOR", "check_finite"]

#: a mean loss this many times the first epoch's is reported as a blow-up
BLOWUP_FACTOR = 1e3


def check_finite(trainer: Any, rec: dict[str, Any]) -> None:
    """Raise :class:`UserError` when ``trainer``'s loss or weights are not finite after the
    epoch of ``rec``; warn once when the loss has grown by orders of magnitude."""
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
        saved = trainer._last_saved
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
    elif loss > BLOWUP_FACTOR * max(state.first_loss, 1e-12) and not getattr(
        trainer, "_warned_blowup", False
    ):
        trainer._warned_blowup = True
        warnings.warn(
            f"the training loss grew from {state.first_loss:.4g} (epoch 1) to {loss:.4g} (epoch "
            f"{e1}): training is probably diverging; lower optim.lr (now {trainer.optim.lr:g})",
            stacklevel=3,
        )
