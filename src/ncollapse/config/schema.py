"""The run configuration: one typed tree of dataclasses.

A recipe file lists only what differs from the defaults below. The defaults are the official
CIFAR-LT recipe of Yang et al. (NeurIPS 2022) where one exists; the embedded default data
(long-tailed digits) gets its own small schedule, :func:`digits_defaults`. Every field is listed,
with its meaning, in ``docs/config.md`` (generated from this file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RUN_KEYS",
    "AllNCConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "digits_defaults",
]

#: config keys that say where and how a run executes, not what it computes: a resumed run may
#: change them, and a sweep rerun may change them between invocations
RUN_KEYS = ("run.",)


@dataclass
class DataConfig:
    """What to train on. ``name``: digits | cifar10 | cifar100 | imagefolder."""

    name: str = "digits"
    root: str | None = None  # where the files are; None searches the usual places
    imbalance: float = 0.01  # imbalance factor r in (0, 1]; imbalance ratio = 1/r
    profile: str = "exp"  # exp | step
    subset_seed: int = 0  # seed of the long-tail subset choice (kept apart from `seed`)
    download: bool = False  # fetch the official archives when missing (needs a network)
    augment: str = "auto"  # auto | standard (crop+flip) | none
    class_order: list[str] | None = None  # imagefolder: explicit class order (label = index)
    cache_dir: str | None = None  # where decoded uint8 arrays are cached; None: beside the data
    test_fraction: float = 0.3  # digits only: share of each class held out (balanced) for test
    # validation split: `unused` holds out up to val_per_class training images per class that
    # the long-tail subset leaves unused (never the test set); `none` has no validation set
    val: str = "none"  # none | unused
    val_per_class: int = 1000
    val_seed: int = 0  # seed of the validation draw (kept apart from the other seeds)
    size: int | None = None  # resize images to size x size at decode time (None: keep)
    train_list: str | None = None  # list-file datasets: "<relative path> <label>" per line
    test_list: str | None = None
    val_list: str | None = None
    workers: int = 4  # streaming datasets: DataLoader worker processes


@dataclass
class ModelConfig:
    """Backbone and head. ``head``: linear | linear-frozen | cosine | etf."""

    backbone: str = "resnet32"
    width: int = 1  # width multiplier (CIFAR ResNets: 1 -> 16/32/64, 2 -> 32/64/128)
    head: str = "etf"
    feature_norm: str = "bn_l2"  # etf head: bn_l2 | bn | none
    scale: float = 1.0  # etf and cosine heads: logit scale s (logits = s M^T h)
    etf_seed: int = 0  # seed of the fixed frame (kept apart from `seed`)
    pretrained: str | None = None  # backbone weights from a local file (torchvision key names)
    # linear heads: default (PyTorch's nn.Linear) | kaiming_normal (the released CIFAR code's)
    head_init: str = "default"


@dataclass
class LossConfig:
    """Training loss. ``name``: ce | dr | la | bs | focal | ldam | allnc."""

    name: str = "dr"
    balance: str = "batch"  # dr: batch (official) | none | global
    reg_lam: float = 0.0  # dr: weight of the mean feature norm
    tau: float = 1.0  # la: logit-adjustment temperature
    focal_gamma: float = 1.0  # focal: focusing parameter
    ldam_max_margin: float = 0.5  # ldam: largest per-class margin
    ldam_scale: float = 30.0  # ldam: logit scale s
    drw: bool = False  # deferred re-weighting (class weights switched on late in training)
    drw_epoch: int | None = None  # drw from this epoch (None: the first lr milestone); sets drw
    drw_beta: float = 0.9999  # drw: effective-number beta
    posthoc_tau: float | None = None  # post-hoc logit adjustment at evaluation (None: off)


@dataclass
class OptimConfig:
    """SGD and its schedule (official: linear warm-up, then steps at ``milestones``), mixup and
    weight averaging."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    batch_size: int = 128
    epochs: int = 200
    # whole epochs ramp once per epoch (official); a fraction (a shortened schedule) per batch
    warmup_epochs: float = 5
    milestones: list[int] = field(default_factory=lambda: [160, 180])
    gamma: float = 0.1
    # step schedule: the rate after the m-th milestone is lr * lr_factors[m-1] (None: gamma**m)
    lr_factors: list[float] | None = None
    schedule: str = "step"  # step (official) | cosine | linear (decay to final_lr * lr)
    final_lr: float = 0.0  # cosine and linear: the last rate, as a fraction of lr
    mixup_alpha: float = 1.0  # 0 turns mixup off
    mixup_epochs: float | None = None  # mixup only in the first N epochs (None: all of them)
    # exponential moving average of the weights (and BatchNorm statistics), per step: 0 is off;
    # evaluation, the collapse metrics and model.pt use the average
    ema: float = 0.0
    ema_start: float = 0.0  # the epoch from which the average runs (earlier weights are skipped)
    # deferred re-sampling: from this epoch on, each epoch draws its N samples class-balanced
    # (every class equally likely, with replacement) instead of a permutation (None: never)
    balanced_from: float | None = None


@dataclass
class EvalConfig:
    """When and what to evaluate."""

    every: int = 1  # measure accuracy every N epochs (0: only at the end; always at the end)
    # where accuracy is measured: test and/or val (the validation split of data.val); choose
    # hyper-parameters on val and look at test once
    splits: list[str] = field(default_factory=lambda: ["test"])
    tta: bool = False  # average the logits of every image and its mirror image
    # neural-collapse metrics (NC1-NC4, minority collapse) every N epochs and at the end; 0: only
    # at the end. A pass over the training set without augmentation (and the test set), each time
    collapse_every: int = 5
    collapse_splits: list[str] = field(
        default_factory=lambda: ["train", "test"]
    )  # where to measure
    batch_size: int = 512


@dataclass
class RunConfig:
    """Where outputs go and how the loop runs."""

    out_dir: str = "runs"
    name: str | None = None  # run directory name; None derives one from the recipe
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # mixed precision where the hardware runs it natively: CUDA (bf16 or fp16), CPUs with bf16
    # instructions (avx512_bf16, amx_bf16); fp32 elsewhere. Evaluation is always fp32.
    amp: bool = True
    # torch CPU threads; None: the cores not busy when the run starts (docs/threads.md)
    threads: int | None = None
    channels_last: bool = True  # NHWC memory layout for image batches (about 1.5-2x faster convs)
    checkpoint_every: int = 1
    tensorboard: bool = True
    progress: str = "auto"  # auto | bar | log | none
    # data-parallel training under torchrun (docs/distributed.md): BatchNorm statistics over the
    # global batch (all processes) instead of each process's share; no effect in one process
    sync_bn: bool = False
    # under torchrun, the batch the loss sees: local (each process's share, as DDP code computes
    # it: DR's per-batch class weights per share), global (the outputs of the whole global batch
    # gathered: the one-process loss), auto (local; global for a criterion with state, e.g. AllNC)
    loss_batch: str = "auto"


@dataclass
class AllNCConfig:
    """AllNC components (docs/allnc.md); each can be switched off for ablation."""

    hycon: bool = True
    hycon_weight: float = 1.0
    hycon_temperature: float = 0.1
    p2p: bool = True
    p2p_weight: float = 1.0
    p2p_temperature: float = 0.5
    p2p_symmetric: bool = True
    gbbn: bool = True
    mean_momentum: float = 0.9
    batch_weight: float = 0.5  # class prototype = mix of in-batch mean (this share) and memory
    centre: bool = True  # HyCon/P2P on directions about the class-balanced centre of the means
    gbbn_detach: bool = False  # ablation: the reversed batch trains only the classifier


@dataclass
class Config:
    """The whole run. ``seed`` drives initialisation and data order; the subset and ETF seeds
    live in ``data.subset_seed`` and ``model.etf_seed``."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    allnc: AllNCConfig = field(default_factory=AllNCConfig)


def digits_defaults() -> dict[str, Any]:
    """Overrides that make the embedded digits data train in seconds (a dict for :func:`load_config`)."""
    return {
        "data": {"name": "digits", "imbalance": 0.05},
        "model": {"backbone": "digits_cnn"},
        "optim": {
            "epochs": 30,
            "batch_size": 64,
            "warmup_epochs": 2,
            "milestones": [24, 28],
            "weight_decay": 5e-4,
            "mixup_alpha": 0.0,
        },
    }
