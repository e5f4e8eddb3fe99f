"""The run configuration: one typed tree of sections, with the keys every run reads.

A recipe file lists only what differs from the defaults below. The defaults are the official
CIFAR-LT recipe of Yang et al. (NeurIPS 2022) where one exists. The keys of one component (a
loss's constants, a head's options, a schedule's milestones) are declared by that component with
its registry, and the choice of component (``loss.name``, ``model.head``, ...) takes its valid
names and its default from that registry (:mod:`.section`). Every key is listed, with its
meaning, in ``docs/config.md`` (generated from these declarations).
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from .section import INF, Section, option, section

__all__ = [
    "RUN_KEYS",
    "SEED_MAX",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "scale_epochs",
    "scale_fraction",
    "seed_option",
]

#: config keys that say where and how a run executes, not what it computes: a resumed run may
#: change them, and a sweep rerun may change them between invocations (``eval.batch_size`` too:
#: it changes no result, and a run resumed on a smaller device may need a smaller one)
RUN_KEYS = ("run.", "eval.batch_size")

#: seeds go to NumPy's legacy generator too, which takes 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1


def _seed(key: str, value: int) -> None:
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(
            f"config key '{key}' is a seed: an integer in [0, {SEED_MAX}], got {value}"
        )


def seed_option(doc: str) -> int:
    """A seed: an integer in [0, 2**32 - 1], 0 by default."""
    return option(0, doc, check=_seed)  # type: ignore[no-any-return]


def _whole_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def scale_epochs(least: int):
    """``scale`` of an :class:`~.section.Option` holding whole epochs (one or a list): halves
    round up (Python's round() would go to even), never below ``least``; None stays None."""

    def scale(value, factor, epochs):
        if value is None:
            return None
        if isinstance(value, list):
            return [scale(v, factor, epochs) for v in value]
        return max(least, math.floor(value * factor + 0.5))

    return scale


def scale_fraction(value, factor, epochs):
    """``scale`` of an option holding a (fractional) epoch: proportional, to 6 decimals."""
    return None if value is None else _whole_if_whole(round(value * factor, 6))


#: the longest warm-up ``--epochs`` leaves, as a share of the new schedule
WARMUP_CAP = 1 / 6


def _scale_warmup(value, factor, epochs):
    # a fraction of an epoch ramps per batch (not rounded: a one-epoch ramp is already the full
    # rate); the warm-up keeps its length, at most a sixth of the new schedule
    return _whole_if_whole(round(min(value, epochs * WARMUP_CAP), 6))


class DataConfig(Section, key="data"):
    """What to train on."""

    name: str = option(None, "the dataset")
    root: str | None = option(None, "where the files are; None searches the usual places")
    imbalance: float | None = option(
        None,
        "imbalance factor r in (0, 1] of the long-tailed training subset (imbalance ratio 1/r); "
        "null: the dataset's own (0.01, the protocol's ratio 100, for the balanced benchmarks; "
        "for your own data, an image folder or list files, every image as given)",
        type=float | None,
    )
    profile: str = option("exp", "how counts fall from the largest class to the smallest")
    subset_seed: int = seed_option("seed of the long-tail subset choice (kept apart from `seed`)")
    download: bool = option(False, "fetch the official archives when missing (needs a network)")
    augment: str = option("auto", "`auto`: the dataset's own default")
    cache_dir: str | None = option(
        None,
        "where decoded uint8 arrays are cached; null: $NCOLLAPSE_CACHE, else the user cache "
        "directory ($XDG_CACHE_HOME/ncollapse or ~/.cache/ncollapse), never the data folder",
    )
    val: str = option(
        "none",
        "validation split: `unused` holds out up to val_per_class training images per class "
        "that the long-tail subset leaves unused (never the test set); `none` has no validation "
        "set",
    )
    val_per_class: int = option(
        1000, "`val: unused`: at most this many validation images per class", range=(1, INF, "[)")
    )
    val_seed: int = seed_option("seed of the validation draw (kept apart from the other seeds)")
    size: int | None = option(None, "resize images to size x size at decode time (None: keep)")
    workers: int = option(4, "streaming datasets: DataLoader worker processes")


class ModelConfig(Section, key="model"):
    """Backbone and head."""

    backbone: str = option(None, "the feature extractor")
    width: int = option(1, "width multiplier (CIFAR ResNets: 1 -> 16/32/64, 2 -> 32/64/128)")
    # for data whose class count is not known in advance (an image folder): a fixed ETF of K
    # vertices needs a feature of at least K - 1 dimensions
    grow_width: bool = option(
        False, "widen the backbone from model.width until its feature has K - 1 dimensions"
    )
    head: str = option(None, "the classifier after the backbone")
    pretrained: str | None = option(
        None, "backbone weights from a local file (torchvision key names)"
    )


class LossConfig(Section, key="loss"):
    """Training loss."""

    name: str = option(None, "the training loss")
    posthoc_tau: float | None = option(None, "post-hoc logit adjustment at evaluation (None: off)")


class OptimConfig(Section, key="optim"):
    """The optimiser and its schedule (official: SGD, linear warm-up, then steps at
    ``milestones``), mixup and weight averaging."""

    optimizer: str = option(None, "the optimiser")
    lr: float = option(0.1, "peak learning rate (after the warm-up)")
    weight_decay: float = option(
        2e-4, "L2 weight decay, on all parameters (BatchNorm included, as the released code)"
    )
    batch_size: int = option(
        128, "training mini-batch size (DR's per-batch class weights are computed over it)"
    )
    epochs: int = option(
        200,
        "training epochs (`--epochs N` also scales the milestones; the warm-up stays, at most N/6)",
    )
    warmup_epochs: float = option(
        5,
        "whole epochs ramp once per epoch (official); a fraction (a shortened schedule) per batch",
        scale=_scale_warmup,
    )
    schedule: str = option(None, "how the rate moves after the warm-up")
    mixup_alpha: float = option(1.0, "0 turns mixup off")
    mixup_epochs: float | None = option(
        None, "mixup only in the first N epochs (None: all of them)", scale=scale_fraction
    )
    ema: float = option(
        0.0,
        "exponential moving average of the weights (and BatchNorm statistics), per step: 0 is "
        "off; evaluation, the collapse metrics and model.pt use the average",
    )
    ema_start: float = option(
        0.0,
        "the epoch from which the average runs (earlier weights are skipped)",
        scale=scale_fraction,
    )
    balanced_from: float | None = option(
        None,
        "deferred re-sampling: from this epoch on, each epoch draws its N samples "
        "class-balanced (every class equally likely, with replacement) instead of a "
        "permutation (None: never)",
        scale=scale_fraction,
    )
    grad_clip: float | None = option(
        None,
        "clip the gradient to this global L2 norm before every step (None: no clipping)",
        range=(0, INF, "()"),
    )


class EvalConfig(Section, key="eval"):
    """When and what to evaluate."""

    every: int = option(
        1, "measure accuracy every N epochs (0: only at the end; always at the end)"
    )
    splits: list[str] = option(
        ["test"],
        "where accuracy is measured: test and/or val (the validation split of data.val); choose "
        "hyper-parameters on val and look at test once",
    )
    tta: bool = option(False, "average the logits of every image and its mirror image")
    collapse_every: int = option(
        5,
        "neural-collapse metrics (NC1-NC4, minority collapse) every N epochs and at the end; 0: "
        "only at the end. A pass over the training set without augmentation (and the test set), "
        "each time",
    )
    collapse_splits: list[str] = option(["train", "test"], "where to measure")
    batch_size: int = option(
        128,
        "batch size of evaluation and collapse passes (no effect on results; may change on a "
        "resume). On a CPU 128 evaluates faster than larger batches (benchmarks/eval_batch.py, "
        "docs/speed.md)",
    )


class RunConfig(Section, key="run"):
    """Where outputs go and how the loop runs."""

    out_dir: str = option("runs", "parent folder of run directories")
    name: str | None = option(None, "run directory name; None derives one from the recipe")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    amp: bool = option(
        True,
        "mixed precision where the hardware runs it natively: CUDA (bf16 or fp16), CPUs with "
        "bf16 instructions (avx512_bf16, amx_bf16); fp32 elsewhere. Evaluation is always fp32.",
    )
    threads: int | None = option(
        None,
        "torch CPU threads; None: the cores not busy when the run starts (docs/threads.md)",
    )
    channels_last: bool = option(
        True, "NHWC memory layout for image batches (about 1.5-2x faster convs)"
    )
    step: str = option(
        None,
        "how each training step runs: `eager` issues it operation by operation; `graph` captures "
        "the whole step once as a CUDA graph and replays it (CUDA only; elsewhere, or where the "
        "step cannot be captured, the eager step with a line saying why; docs/speed.md)",
    )
    checkpoint_every: int = option(1, "save `checkpoint.pt` every N epochs (and at the end)")
    tensorboard: bool = option(True, "write TensorBoard event files to `tb/` in the run directory")
    progress: str = option("auto", "how training reports itself on the terminal")
    sync_bn: bool = option(
        False,
        "data-parallel training under torchrun (docs/distributed.md): BatchNorm statistics over "
        "the global batch (all processes) instead of each process's share; no effect in one "
        "process",
    )
    loss_batch: str = option(
        "auto",
        "under torchrun, the batch the loss sees: local (each process's share, as DDP code "
        "computes it: DR's per-batch class weights per share), global (the outputs of the whole "
        "global batch gathered: the one-process loss), auto (local; global for a criterion with "
        "state, e.g. AllNC)",
    )


class Config(Section):
    """The whole run. ``seed`` drives initialisation and data order; the subset and ETF seeds
    live in ``data.subset_seed`` and ``model.etf_seed``."""

    name: str = option(
        "run", "the run's name (recipes and method presets set it; `run.name` names the directory)"
    )
    seed: int = seed_option(
        "training seed: initialisation, data order, augmentation and mixup draws"
    )
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    loss: LossConfig = section(LossConfig)
    optim: OptimConfig = section(OptimConfig)
    eval: EvalConfig = section(EvalConfig)
    run: RunConfig = section(RunConfig)
