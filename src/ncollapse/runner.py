"""Run a config end to end: load the data, build the network, criterion, augmentation and
evaluator, create or resume the run directory, train, and return the summary.

:func:`train` is the Python API (the same composition as the ``ncollapse train`` command);
:func:`run_training` takes a config already composed.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .build import build_augment, build_criterion, build_evaluator, build_network
from .composition import compose
from .config import Config, complete_config_dict, config_diff, config_to_dict, is_run_key
from .data import load_data
from .data.base import DataBundle
from .engine.checkpoints import STOP_SIGNALS, stop_on_signals
from .engine.distributed import SINGLE, Distributed, ReadOnlyRun, init_distributed
from .engine.loop import Trainer
from .engine.pack import PackedTrainer, pack_unavailable
from .engine.progress import Progress
from .errors import UserError
from .provenance import cpu_info, data_record, env_record, resume_record
from .rundir import Run, SavedRun, check_out_dir, check_run_name
from .threads import set_threads

__all__ = [
    "STOP_SIGNALS",
    "RunResult",
    "build_trainer",
    "cpu_info",
    "run_packed",
    "run_training",
    "stop_on_signals",
    "train",
]


@dataclass
class RunResult:
    """Where a run wrote its files and what it measured."""

    run_dir: Path
    summary: dict[str, Any]

    @property
    def run(self) -> Run:
        """The run directory, for reading its files (:class:`ncollapse.rundir.Run`)."""
        return Run(self.run_dir)


def _resume_config(saved: dict[str, Any], given: Config | None) -> Config:
    """The saved config, with the run keys of ``given`` (``run.*`` and ``eval.batch_size``:
    where and how to run, no result changes with them); any other difference is refused."""
    saved = complete_config_dict(saved)  # keys added since the run was written: their defaults
    if given is None:
        return compose(base=saved)
    new = config_to_dict(given)
    diff = [d for d in config_diff(saved, new) if not is_run_key(d)]
    if diff:
        raise UserError(
            "the given config differs from the run being resumed; refusing to mix them:\n  "
            + "\n  ".join(diff)
            + "\n(resume without --config/--set, or start a new run)"
        )
    merged = dict(saved)
    merged["run"] = {**saved.get("run", {}), **new["run"]}
    merged["eval"] = {**saved.get("eval", {}), "batch_size": new["eval"]["batch_size"]}
    return compose(base=merged)


def build_trainer(
    cfg: Config,
    bundle: DataBundle,
    device: torch.device,
    progress: Progress | None = None,
    dist: Distributed = SINGLE,
) -> Trainer:
    """Everything a run trains with, built from ``cfg`` (the training seed set first, so the
    initial weights depend on it alone): network, criterion, augmentation, evaluator, trainer.
    Streamed data brings its own per-sample augmentation (no batch augmentation)."""
    if not bundle.resident and cfg.data.augment != "auto":
        raise UserError(
            f"data.augment={cfg.data.augment} augments in-memory batches; streamed list-file "
            "data is augmented per sample (random-resized crop, flip, colour jitter): drop "
            "data.augment"
        )
    torch.manual_seed(cfg.seed)
    network = build_network(cfg, len(bundle.class_counts), in_channels=bundle.in_channels)
    criterion = build_criterion(cfg, network, bundle.class_counts, bundle.train.labels)
    return Trainer(
        network,
        criterion,
        bundle,
        optim=cfg.optim,
        evaluation=cfg.eval,
        run=cfg.run,
        seed=cfg.seed,
        augment=build_augment(cfg, bundle) if bundle.resident else None,
        device=device,
        evaluator=build_evaluator(cfg, bundle),
        progress=progress or Progress(cfg.optim.epochs, "none"),
        name=cfg.name,
        dist=dist,
        workers=cfg.data.workers,
    )


def run_training(
    cfg: Config | None = None,
    *,
    resume: str | Path | Run | SavedRun | None = None,
    bundle: DataBundle | None = None,
    prefix: str = "",
) -> RunResult:
    """Train ``cfg`` into a new run directory, or resume the run at ``resume`` (a path, a
    :class:`~ncollapse.rundir.Run`, or what :meth:`~ncollapse.rundir.Run.read_saved` read from
    it; ``cfg``, when given with ``resume``, must match the saved config except for its
    ``run.*`` keys).

    Started by torchrun with several processes, this is one rank of a data-parallel run
    (``docs/distributed.md``): rank 0 decides on and writes the run directory, the others only
    read it."""
    p = _prepare(cfg, resume, bundle, prefix)
    try:
        with stop_on_signals(p.trainer):
            summary = p.trainer.fit(p.writer)
    except BaseException as exc:
        _discard_unfinished(p, exc)
        raise
    return RunResult(p.run.path, summary)


@dataclass
class _Prepared:
    """A run ready to train: its trainer and run directory (what it wrote there, what it
    resumed from)."""

    trainer: Trainer
    run: Run
    writer: Any
    saved: SavedRun | None
    dist: Distributed
    env: dict[str, Any] | None


def _prepare(
    cfg: Config | None,
    resume: str | Path | Run | SavedRun | None,
    bundle: DataBundle | None,
    prefix: str,
) -> _Prepared:
    saved: SavedRun | None = None
    if resume is not None:
        # every file a resume reads, read once, before any data is loaded
        saved = resume if isinstance(resume, SavedRun) else Run.load(resume).read_saved()
        cfg = _resume_config(saved.config, cfg)
    elif cfg is None:
        raise ValueError("run_training needs a config or a run directory to resume")
    else:
        check_out_dir(cfg.run.out_dir, cfg.run.name)

    dist, device = init_distributed(cfg.run.device)
    dist.check_same("runs", [config_to_dict(cfg), None if saved is None else str(saved.run.path)])
    if saved is None and cfg.run.name is not None:  # refuse a taken name before loading data
        dist.on_main(lambda: _refuse_taken_name(cfg))
    requested = cfg.run.threads
    started = _started_threads(saved)
    if requested is None and started:  # a resume keeps the thread count it started with
        requested = started
    threads = set_threads(requested)
    cpu_rounding = device.type == "cpu"  # on a GPU the CPU threads change no result
    if started and threads.threads != started and cpu_rounding and dist.is_main:
        warnings.warn(
            f"resuming with {threads.threads} CPU thread(s) where the run started with "
            f"{started}: the result differs in rounding from an uninterrupted run (give "
            f"run.threads={started}, or leave it out, for the exact one)",
            UserWarning,
            stacklevel=2,
        )
    if bundle is None:
        bundle = dist.first_per_node(lambda: load_data(cfg.data))
    mode = cfg.run.progress if dist.is_main else "none"
    progress = Progress(cfg.optim.epochs, mode, prefix=prefix)
    trainer = build_trainer(cfg, bundle, device, progress=progress, dist=dist)
    # the run directory is made only once everything that can be refused has been built
    if saved is None:
        name, explicit = cfg.run.name or cfg.name, cfg.run.name is not None
        run = Run(dist.on_main(lambda: Run.create(cfg.run.out_dir, name, explicit=explicit).path))
    else:
        run = saved.run
        if list(saved.data["class_counts"]) != list(bundle.class_counts):
            raise UserError(
                f"the data found now gives class counts {list(bundle.class_counts)}, but the run in "
                f"{run.path} trained on {saved.data['class_counts']}; resume with the same data"
            )

    writer: Any = run if dist.is_main else ReadOnlyRun(run)
    env = None
    if saved is None:
        writer.write_config(config_to_dict(cfg))
        writer.write_data(data_record(cfg, bundle))
        env = env_record(device, cfg.run.amp, dist, trainer.global_batch)
        env["step"] = "eager" if trainer.graph is None else "graph"
        writer.write_env(env)
        progress.message(f"run directory: {run.path} ({threads.describe()})")
        progress.message(bundle.describe())
        grown = getattr(getattr(trainer.network, "backbone", None), "grown", None)
        if grown:
            progress.message(grown)
    elif dist.broadcast_object(saved.checkpoint is not None):
        assert saved.checkpoint is not None
        trainer.load_state_dict(saved.checkpoint)
        writer.truncate_metrics(trainer.state.epoch, saved.records)
        at = saved.checkpoint.get("position")
        unfinished = at is not None or trainer.state.epoch < cfg.optim.epochs
        if saved.env and unfinished:  # a damaged or missing env.json is left as it is
            position = {"after_epoch": trainer.state.epoch}
            if at is not None:  # stopped inside the next epoch: after this step of it
                position.update(step=int(at["step"]), steps=int(at["steps"]))
            writer.write_env(resume_record(saved.env, device, cfg.run.amp, position))
        if at is None:
            where = f"after epoch {trainer.state.epoch}"
        elif at.get("record") is not None:
            where = f"at the end of epoch {at['epoch'] + 1} (its evaluation)"
        else:
            where = f"in epoch {at['epoch'] + 1} after step {at['step']} of {at['steps']}"
        progress.message(f"resuming {run.path} {where} ({threads.describe()})")
    else:  # stopped before its first checkpoint: nothing to keep, start from epoch 0
        writer.truncate_metrics(0, saved.records)
        progress.message(f"{run.path} has no checkpoint yet: training it from epoch 0")
    return _Prepared(trainer, run, writer, saved, dist, env)


def _started_threads(saved: SavedRun | None) -> int:
    """The thread count a resumed run started with (0: a new run, or none readable)."""
    value = saved.env.get("threads") if saved is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _discard_unfinished(p: _Prepared, exc: BaseException) -> None:
    """After ``exc`` stopped a new run before its first checkpoint: nothing to keep, so remove
    its directory (the same command can simply be rerun), and say so in a user error."""
    if _remove(p) and isinstance(exc, UserError):
        raise UserError(f"{exc} (no epoch finished: {p.run.path} was removed)") from None


def _remove(p: _Prepared) -> bool:
    """Remove a new run's directory if it holds no checkpoint; whether it was removed."""
    if p.saved is None and p.dist.is_main and not p.run.checkpoint_path.is_file():
        shutil.rmtree(p.run.path, ignore_errors=True)
        return True
    return False


def run_packed(
    cfgs: Sequence[Config | None],
    *,
    resumes: Sequence[str | Path | Run | SavedRun | None] | None = None,
    bundle: DataBundle | None = None,
    prefixes: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[RunResult | BaseException]:
    """Train several runs in one process (each ``cfg``, or the run at ``resumes[i]``, as
    :func:`run_training` would): the runs that can be packed together
    (:func:`~ncollapse.engine.pack.pack_unavailable`: the first run's backbone shape, device,
    schedule length and so on) as one batched model (:class:`~ncollapse.engine.pack.PackedTrainer`),
    each of the others alone afterwards, with a line to ``log`` saying why. Returns each run's
    result, or the error that stopped it, in order; each run directory holds what the run alone
    would have written (to float rounding)."""
    n = len(cfgs)
    resumes = list(resumes) if resumes is not None else [None] * n
    prefixes = list(prefixes) if prefixes is not None else [""] * n
    prepared: list[_Prepared] = []
    try:
        for c, r, pre in zip(cfgs, resumes, prefixes):
            prepared.append(_prepare(c, r, bundle, pre))
    except BaseException as exc:  # the runs made so far have trained nothing
        for p in prepared:
            _discard_unfinished(p, exc)
        raise
    alone = [pack_unavailable(p.trainer) for p in prepared]
    first = next((p.trainer for p, why in zip(prepared, alone) if why is None), None)
    together = []
    for p in prepared:
        reason = pack_unavailable(p.trainer, first or p.trainer)
        if reason is None:
            together.append(p)
        elif log is not None:
            log(f"{p.run.path.name} trains alone, not packed: {reason}")
    out: dict[int, RunResult | BaseException] = {}
    try:
        if len(together) > 1:
            names = [p.run.path.name for p in together]
            if any(p.trainer.graph is not None for p in together) and log is not None:
                log("packed runs take the eager step: run.step=graph is not combined with packing")
            for p in together:
                p.trainer.graph = None
                if p.env is not None:  # which runs shared the batched model
                    p.writer.write_env({**p.env, "pack": names, "step": "eager"})
            packed = PackedTrainer([p.trainer for p in together])
            with stop_on_signals(packed):  # SIGTERM/SIGUSR1: every run of the pack stops
                results = packed.fit([p.writer for p in together])
            for p, result in zip(together, results):
                out[prepared.index(p)] = _result(p, result)
        for i, p in enumerate(prepared):
            if i in out:
                continue
            try:
                with stop_on_signals(p.trainer):
                    out[i] = RunResult(p.run.path, p.trainer.fit(p.writer))
            except Exception as exc:
                out[i] = _result(p, exc)
    except BaseException as exc:  # a signal, ^C or an error of the pack: the runs that kept
        # nothing (those not started yet included) are removed, as a single run's would be
        removed = [str(p.run.path) for i, p in enumerate(prepared) if i not in out and _remove(p)]
        if removed and isinstance(exc, UserError):
            raise UserError(f"{exc} (no epoch finished: {', '.join(removed)} removed)") from None
        raise
    return [out[i] for i in range(n)]


def _result(p: _Prepared, result: dict[str, Any] | BaseException) -> RunResult | BaseException:
    if not isinstance(result, BaseException):
        return RunResult(p.run.path, result)
    try:
        _discard_unfinished(p, result)
    except UserError as exc:
        return exc
    return result


def _refuse_taken_name(cfg: Config) -> None:
    check_run_name(cfg.run.name)
    taken = Path(cfg.run.out_dir) / cfg.run.name
    if taken.is_dir() and any(taken.iterdir()):
        Run.create(cfg.run.out_dir, cfg.run.name, explicit=True)  # raises, naming --resume


def train(
    recipe: str | Path | None = None,
    method: str | None = None,
    overrides: Any = (),
    *,
    resume: str | Path | Run | SavedRun | None = None,
    bundle: DataBundle | None = None,
    **typed: Any,
) -> RunResult:
    """Train from Python exactly as ``ncollapse train`` does, and return the run.

    ``recipe``, ``method``, ``overrides`` (``["optim.lr=0.05"]`` or a nested dict) and the
    typed keywords (``epochs``, ``seed``, ``imbalance``, ``device``, ``out``, ``name``, ...) go
    to :func:`ncollapse.composition.compose`; with no recipe this trains ETF + DR on the embedded
    long-tailed digits in seconds. ``resume`` continues a run directory instead (only
    ``run.*`` and ``eval.batch_size`` overrides are allowed then)::

        result = ncollapse.train("cifar10_lt_r100_etf_dr", epochs=30, out="runs")
        result.summary["final"]["acc"]
    """
    if resume is not None:
        saved = resume if isinstance(resume, SavedRun) else Run.load(resume).read_saved()
        cfg = compose(base=saved.config, overrides=overrides, **typed)
        return run_training(cfg, resume=saved, bundle=bundle)
    cfg = compose(recipe, method, overrides, **typed)
    return run_training(cfg, bundle=bundle)
