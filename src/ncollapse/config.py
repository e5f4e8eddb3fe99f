"""Run configuration: one typed tree of dataclasses, loaded from YAML recipes and ``--set`` overrides.

A recipe file lists only what differs from the defaults below. Every key is checked: an unknown
key raises :class:`~ncollapse.errors.ConfigError` naming the key and the closest valid one, and
values are coerced to the declared type with a message naming the field when that fails.

The defaults are the official CIFAR recipe of Yang et al. (SPEC section 5) where one exists; the
embedded default data (long-tailed digits) gets its own small schedule in :func:`digits_defaults`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean

#: the recipes shipped with the repository (configs/ at its root)
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "complete_config_dict",
    "config_diff",
    "config_to_dict",
    "drw_start",
    "find_config",
    "load_config",
    "scale_schedule",
]


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
    """SGD and the per-epoch schedule: linear warm-up, then steps at ``milestones``."""

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
    mixup_alpha: float = 1.0  # 0 turns mixup off


@dataclass
class EvalConfig:
    """When and what to evaluate."""

    every: int = 1  # evaluate on the test set every N epochs (and always at the last)
    collapse_every: int = 0  # neural-collapse metrics every N epochs (0: only at the end)
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
    amp: bool = True  # automatic mixed precision (CUDA only)
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    channels_last: bool = True  # NHWC memory layout for image batches (about 1.5-2x faster convs)
    checkpoint_every: int = 1
    tensorboard: bool = True
    progress: str = "auto"  # auto | bar | log | none


@dataclass
class AllNCConfig:
    """AllNC components (SPEC section 8); each can be switched off for ablation."""

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


# ---------------------------------------------------------------- choices checked on load

CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": ("digits", "cifar10", "cifar100", "imagefolder"),
    "data.profile": ("exp", "step"),
    "data.augment": ("auto", "standard", "none"),
    "model.head": ("linear", "linear-frozen", "cosine", "etf"),
    "model.feature_norm": ("bn_l2", "bn", "none"),
    "loss.name": ("ce", "dr", "la", "bs", "focal", "ldam", "allnc"),
    "loss.balance": ("batch", "none", "global"),
    "run.progress": ("auto", "bar", "log", "none"),
}


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


# ---------------------------------------------------------------- dict <-> dataclass


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; give it a mapping, not {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' takes a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None:
        raise ConfigError(f"config key '{key}' cannot be null")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in (
                "true",
                "yes",
                "on",
                "1",
                "false",
                "no",
                "off",
                "0",
            ):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key '{key}' takes {getattr(tp, '__name__', tp)}, got {value!r}"
        ) from None
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'"
                + did_you_mean(prefix + key, _all_keys(cls, prefix))
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    obj = cls(**{k: v for k, v in kwargs.items() if k in names})
    return obj


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, tp in _field_types(cls).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out.extend(_all_keys(tp, prefix + name + "."))
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (what the run directory stores)."""
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``'optim.lr=0.05'`` -> ``{'optim': {'lr': 0.05}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set takes key=value (for example optim.lr=0.05), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set takes key=value, the key is empty in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    cur = nested
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return nested


def find_config(name: str) -> Path:
    """A config path, or a recipe name looked up in ./configs and the repository's configs/."""
    p = Path(name)
    if p.is_file():
        return p
    candidates = [
        Path("configs") / f"{name}.yaml",
        REPO_CONFIGS / f"{name}.yaml",
        REPO_CONFIGS / name,
    ]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(x.stem for x in REPO_CONFIGS.glob("*.yaml")) if REPO_CONFIGS.is_dir() else []
    hint = did_you_mean(name, known) if known else ""
    raise ConfigError(f"config '{name}' is neither a file nor a known recipe{hint}")


def read_config_file(path: str | Path, _depth: int = 0) -> dict[str, Any]:
    """Read a YAML or JSON recipe into a dict, with errors that name the file. A top-level
    ``extends: other.yaml`` key reads that file first and merges this one over it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is not None:  # a recipe may extend another (path relative to this file)
        if _depth > 8:
            raise ConfigError(f"config file {p}: 'extends' nests too deeply (a cycle?)")
        data = _deep_merge(read_config_file(p.parent / str(parent), _depth + 1), data)
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    """Build a :class:`Config`: defaults, then ``base``, the file at ``path``, ``extra``, then
    each ``key=value`` in ``overrides``. Everything is validated."""
    data: dict[str, Any] = {}
    if base:
        data = _deep_merge(data, base)
    if path is not None:
        data = _deep_merge(data, read_config_file(path))
    if extra:
        data = _deep_merge(data, extra)
    for text in overrides or []:
        data = _deep_merge(data, parse_override(text))
    cfg = _from_dict(Config, data)
    validate(cfg)
    return cfg


def complete_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict with the keys added to :class:`Config` since it was written filled in
    with their defaults (which keep the old behaviour), so that an older run compares equal to
    the same config today. Unknown keys still raise the usual :class:`ConfigError`."""
    return config_to_dict(_from_dict(Config, data))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from :func:`config_to_dict` output (for example a run's saved config)."""
    cfg = _from_dict(Config, data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Range and choice checks, each with a message that names the fix."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}"
                + did_you_mean(str(value), allowed)
            )
    r = cfg.data.imbalance
    if not (0.0 < r <= 1.0) or math.isnan(r):
        hint = f" (for an imbalance ratio of {r:g} use r = {1 / r:g})" if r > 1 else ""
        raise ConfigError(
            f"imbalance factor data.imbalance must be in (0, 1] (r = n_min/n_max; 1 is balanced, "
            f"0.01 is imbalance ratio 100), got {r:g}{hint}"
        )
    o = cfg.optim
    if o.epochs < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {o.epochs}")
    if o.batch_size < 1:
        raise ConfigError(f"optim.batch_size must be >= 1, got {o.batch_size}")
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
    if o.weight_decay < 0 or o.mixup_alpha < 0:
        raise ConfigError("optim.weight_decay and optim.mixup_alpha must be >= 0")
    if o.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    if list(o.milestones) != sorted(o.milestones):
        raise ConfigError(f"optim.milestones must be increasing, got {o.milestones}")
    if cfg.model.scale <= 0:
        raise ConfigError(f"model.scale must be > 0, got {cfg.model.scale}")
    if cfg.model.width < 1:
        raise ConfigError(f"model.width must be >= 1, got {cfg.model.width}")
    bad = [x for x in cfg.eval.collapse_splits if x not in ("train", "test")]
    if bad:
        raise ConfigError(f"eval.collapse_splits takes train and/or test, got {bad}")
    if cfg.eval.every < 1:
        raise ConfigError(f"eval.every must be >= 1, got {cfg.eval.every}")
    if cfg.loss.name == "dr" and cfg.model.head != "etf":
        raise ConfigError(
            "loss.name=dr regresses onto the fixed ETF and needs model.head=etf "
            f"(got model.head={cfg.model.head})"
        )
    start = drw_start(cfg)
    if start is not None and start < 0:
        raise ConfigError(f"loss.drw_epoch must be >= 0, got {start}")
    if start is not None and cfg.loss.name in ("dr", "allnc"):
        raise ConfigError(
            f"deferred re-weighting (loss.drw / loss.drw_epoch) weights a logit loss (ce, la, bs, "
            f"focal, ldam); loss.name={cfg.loss.name} has none: unset loss.drw and loss.drw_epoch"
        )
    if start is not None and start >= o.epochs:
        warnings.warn(
            f"deferred re-weighting starts at epoch {start} but the run has {o.epochs} epochs, "
            "so it never switches on; lower loss.drw_epoch (or the first of optim.milestones)",
            stacklevel=2,
        )
    if cfg.loss.name == "ldam" and cfg.model.head in ("linear", "linear-frozen"):
        warnings.warn(
            f"loss.name=ldam on model.head={cfg.model.head}: LDAM's margins and scale "
            f"(loss.ldam_max_margin={cfg.loss.ldam_max_margin:g}, "
            f"loss.ldam_scale={cfg.loss.ldam_scale:g}) are sized for cosine logits in [-1, 1] "
            "and usually make a plain linear classifier diverge; set model.head=cosine",
            stacklevel=2,
        )


def drw_start(cfg: Config) -> int | None:
    """The 0-based epoch from which deferred re-weighting is on, or None when it is off:
    ``loss.drw_epoch`` when set (setting it turns DRW on), else the first lr milestone when
    ``loss.drw`` is true (LDAM-DRW re-weights from the first decay: epoch 160 of 200)."""
    if cfg.loss.drw_epoch is not None:
        return cfg.loss.drw_epoch
    if not cfg.loss.drw:
        return None
    if not cfg.optim.milestones:
        raise ConfigError(
            "loss.drw=true starts re-weighting at the first lr milestone, but optim.milestones "
            "is empty; set loss.drw_epoch=N"
        )
    return int(cfg.optim.milestones[0])


def _whole_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def scale_schedule(cfg: Config, epochs: int) -> Config:
    """A copy of ``cfg`` shortened (or lengthened) to ``epochs``, with the warm-up, the decay
    milestones and the DRW epoch scaled proportionally, so a short run is a faithful miniature."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    old = cfg.optim.epochs
    f = epochs / old

    def scaled(e: int, least: int) -> int:  # halves round up (Python's round() would go to even)
        return max(least, math.floor(e * f + 0.5))

    new = dataclasses.replace(cfg)
    new.optim = dataclasses.replace(
        cfg.optim,
        epochs=epochs,
        # the warm-up scales exactly (5 of 200 -> 0.5 of 20 epochs, ramped per batch): rounded
        # to a whole epoch it would be 0 or 1, and a one-epoch ramp is already the full rate
        warmup_epochs=_whole_if_whole(round(cfg.optim.warmup_epochs * f, 6)),
        milestones=[scaled(m, 1) for m in cfg.optim.milestones],
    )
    if cfg.loss.drw_epoch is not None:
        new.loss = dataclasses.replace(cfg.loss, drw_epoch=scaled(cfg.loss.drw_epoch, 0))
    return new


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Lines ``key: a -> b`` for every leaf that differs between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_diff(va, vb, prefix + key + "."))
        elif va != vb:
            out.append(f"{prefix}{key}: {json.dumps(va)} -> {json.dumps(vb)}")
    return out
