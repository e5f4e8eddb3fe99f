"""Evaluate a finished run again: its saved weights on any split, with or without flip TTA.

``ncollapse evaluate RUN_DIR --split val`` measures a run's final weights (``model.pt``: the
weight average when the run kept one) on the validation split (images the long-tail subset left
unused), the test set or the training set, without touching the run directory. This is how a
run trained without a validation split (the official 200-epoch recipe, say) gets a validation
figure that recipes can be compared on, so that nothing is ever chosen on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .composition import compose
from .config import complete_config_dict
from .data import load_data
from .engine.state import resolve_device
from .errors import UserError
from .rundir import Run

__all__ = ["evaluate_run"]

SPLITS = ("val", "test", "train")


def _root_from_the_run(run: Run, root: Any) -> str | None:
    """A relative ``data.root`` as the run saw it: from the folder it was trained in (recorded
    in ``env.json``), when the data is there; None keeps the saved value (an absolute root, an
    older run without the record, or data found only from the current folder)."""
    if not isinstance(root, str) or not root or Path(root).expanduser().is_absolute():
        return None
    try:
        cwd = run.env().get("cwd")
    except UserError:
        return None
    if not isinstance(cwd, str) or not (Path(cwd) / root).exists():
        return None
    return str(Path(cwd) / root)


def evaluate_run(
    run_dir: str | Path,
    splits: Sequence[str] = ("test",),
    *,
    tta: bool = False,
    val_per_class: int | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy records (overall, per class, many/medium/few by count and by index) of the run's
    final weights on each of ``splits``; ``val`` uses the run's validation split, or draws one
    (``data.val=unused``, ``val_per_class`` per class) when the run had none."""
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise UserError(f"--split takes {', '.join(SPLITS)}, got {', '.join(bad) or 'nothing'}")
    run = Run.load(run_dir)
    state = run.load_model()  # finite weights, or a one-line error before any data is loaded
    saved = complete_config_dict(run.config_dict())  # keys added since the run: their defaults
    trained_on = run.class_counts()
    data: dict[str, Any] = {}
    if "val" in splits and (saved["data"]["val"] == "none" or val_per_class is not None):
        data = {"val": "unused"}
        if val_per_class is not None:
            data["val_per_class"] = int(val_per_class)
    root = _root_from_the_run(run, saved["data"].get("root"))
    if root is not None:
        data["root"] = root
    acc_splits = [s for s in splits if s != "train"]
    over = {
        "data": data,
        "eval": {"splits": acc_splits or ["test"], "tta": bool(tta)},
        "run": {"progress": "none", "tensorboard": False},
    }
    cfg = compose(base=saved, overrides=over, device=device, threads=threads)
    if threads:
        torch.set_num_threads(threads)
    bundle = load_data(cfg.data)
    if list(trained_on) != list(bundle.class_counts):
        raise UserError(
            f"the data found now gives class counts {list(bundle.class_counts)}, but {run.path} "
            f"trained on {trained_on}: it would be measured on other data"
        )
    from .runner import build_trainer

    trainer = build_trainer(cfg, bundle, resolve_device(cfg.run.device))
    try:
        trainer.network.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"{run.path / 'model.pt'} cannot be loaded into this run's network ({first})"
        ) from None
    epoch = int(saved["optim"]["epochs"])
    out: dict[str, dict[str, Any]] = {}
    for split in splits:
        acc = trainer.evaluator.accuracy(trainer.iterate_outputs(split, tta=tta))
        out[split] = {"split": split, "epoch": epoch, "tta": bool(tta), **acc}
    return out
