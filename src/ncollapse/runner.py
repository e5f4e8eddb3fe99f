"""Run a config end to end: load data, build the network and loss, create or resume the run
directory, train, and return the summary. The CLI commands are thin calls into this module."""

from __future__ import annotations

import datetime
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .build import build_criterion, build_network
from .config import Config, config_diff, config_from_dict, config_to_dict
from .data import load_data
from .data.base import DataBundle
from .engine.loop import Trainer, resolve_device
from .engine.progress import Progress
from .engine.rundir import RunDir
from .errors import UserError

__all__ = ["RunResult", "collapse_for_split", "run_training"]

#: config keys a resume may change (where and how to run, not what is computed)
RESUME_FREE = (
    "run.device",
    "run.progress",
    "run.threads",
    "run.out_dir",
    "run.name",
    "run.amp",
    "run.tensorboard",
)


@dataclass
class RunResult:
    """Where a run wrote its files and what it measured."""

    run_dir: Path
    summary: dict[str, Any]


def collapse_for_split(trainer: Trainer, split: str) -> dict[str, Any]:
    """Neural-collapse metrics of ``trainer``'s network on one split: two streaming passes (class
    statistics, then NC4 against those means). The train split's accumulator is kept on the
    trainer (``collapse_state``) so the run can save the final class means for plots."""
    from .metrics import CollapseAccumulator, default_tail_classes

    net = trainer.network
    weight = net.classifier_weight().detach().float()
    bias = net.classifier_bias()
    counts = trainer.bundle.class_counts
    acc = CollapseAccumulator(len(counts), weight.shape[1], device=trainer.device)
    for feats, _, labels in trainer.iterate_outputs(split):
        acc.update(feats, labels)
    for feats, logits, labels in trainer.iterate_outputs(split):
        acc.update_nc4(feats, labels, logits=logits)
    if split == "train":
        trainer.collapse_state = acc
    return acc.compute(classifier=weight, bias=bias, tail_classes=default_tail_classes(counts))


def _env_record(device: torch.device) -> dict[str, Any]:
    return {
        "ncollapse": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


def _data_record(cfg: Config, bundle: DataBundle) -> dict[str, Any]:
    test_counts = torch.bincount(bundle.test.labels, minlength=len(bundle.class_counts)).tolist()
    return {
        "classes": list(bundle.train.classes),
        "class_counts": list(bundle.class_counts),
        "test_counts": test_counts,
        "num_train": int(bundle.train.labels.numel()),
        "num_test": int(bundle.test.labels.numel()),
        "seeds": {
            "seed": cfg.seed,
            "subset_seed": cfg.data.subset_seed,
            "etf_seed": cfg.model.etf_seed,
        },
        "info": bundle.info,
    }


def _apply_resume_overrides(saved: dict[str, Any], given: Config | None) -> Config:
    if given is None:
        return config_from_dict(saved)
    new = config_to_dict(given)
    diff = [d for d in config_diff(saved, new) if not d.startswith(RESUME_FREE)]
    if diff:
        raise UserError(
            "the given config differs from the run being resumed; refusing to mix them:\n  "
            + "\n  ".join(diff)
            + "\n(resume without --config/--set, or start a new run)"
        )
    merged = dict(saved)
    merged["run"] = {**saved.get("run", {}), **new["run"]}
    return config_from_dict(merged)


def run_training(
    cfg: Config | None = None,
    *,
    resume: str | Path | None = None,
    bundle: DataBundle | None = None,
    prefix: str = "",
) -> RunResult:
    """Train ``cfg`` into a new run directory, or resume the run at ``resume`` (``cfg``, when
    given with ``resume``, must match the saved config except for where/how it runs)."""
    if resume is not None:
        run_dir = RunDir(resume)
        if not run_dir.path.is_dir():
            raise UserError(f"cannot resume: {run_dir.path} does not exist")
        cfg = _apply_resume_overrides(run_dir.read_config_dict(), cfg)
    elif cfg is None:
        raise ValueError("run_training needs a config or a run directory to resume")

    if resume is None and cfg.run.name is not None:  # refuse a taken name before loading data
        taken = Path(cfg.run.out_dir) / cfg.run.name
        if taken.exists() and any(taken.iterdir()):
            RunDir.create(cfg.run.out_dir, cfg.run.name, explicit=True)  # raises, naming --resume
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    if bundle is None:
        bundle = load_data(cfg.data)
    num_classes = len(bundle.class_counts)

    torch.manual_seed(cfg.seed)
    network = build_network(cfg, num_classes, in_channels=bundle.train.images.shape[1])
    if cfg.loss.name == "allnc":
        from .allnc import build_allnc_criterion

        criterion = build_allnc_criterion(cfg, network, bundle.class_counts)
    else:
        criterion = build_criterion(cfg, network, bundle.class_counts)
    # the run directory is made only once everything that can be refused has been built
    if resume is None:
        run_dir = RunDir.create(
            cfg.run.out_dir, cfg.run.name or cfg.name, explicit=cfg.run.name is not None
        )
    else:
        saved_counts = run_dir.read_json("data.json")["class_counts"]
        if list(saved_counts) != list(bundle.class_counts):
            raise UserError(
                f"the data found now gives class counts {list(bundle.class_counts)}, but the run in "
                f"{run_dir.path} trained on {saved_counts}; resume with the same data"
            )

    progress = Progress(cfg.optim.epochs, cfg.run.progress, prefix=prefix)
    trainer = Trainer(
        cfg, network, criterion, bundle, run_dir, device, progress, collapse_fn=collapse_for_split
    )

    if resume is None:
        run_dir.write_yaml("config.yaml", config_to_dict(cfg))
        run_dir.write_json("data.json", _data_record(cfg, bundle))
        run_dir.write_json("env.json", _env_record(device))
        progress.message(f"run directory: {run_dir.path}")
    else:
        ckpt = run_dir.load_checkpoint()
        trainer.load_state_dict(ckpt)
        run_dir.truncate_metrics(trainer.state.epoch)
        progress.message(f"resuming {run_dir.path} after epoch {trainer.state.epoch}")
    summary = trainer.fit()
    state = getattr(trainer, "collapse_state", None)
    if state is not None:  # final class means and classifier, for `ncollapse analyze`
        from .report import save_collapse_state

        save_collapse_state(
            run_dir.path, state, classifier=network.classifier_weight().detach().cpu()
        )
    return RunResult(run_dir.path, summary)
