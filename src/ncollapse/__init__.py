"""ncollapse: fixed simplex-ETF classifiers, the dot-regression loss, neural-collapse metrics and
the unconstrained feature model, for long-tailed classification.

The public names below are imported lazily, so ``import ncollapse`` (and the CLI) stays fast::

    from ncollapse import ETFHead, DotRegressionLoss, simplex_etf
    result = ncollapse.train(epochs=10)   # ETF + DR on the embedded long-tailed digits
    cfg = ncollapse.compose("cifar10_lt_r100_etf_dr", epochs=30)   # the config, nothing run
    run = ncollapse.Run(result.run_dir)   # a run directory, for reading

The guide is ``docs/api.md``; every name is in the API reference (``docs/reference.md``), every
config key in ``docs/config.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # geometry
    "simplex_etf": "geometry",
    "etf_gram": "geometry",
    "etf_gram_error": "geometry",
    # heads
    "HeadOutput": "heads",
    "ETFHead": "heads",
    "LinearHead": "heads",
    "CosineHead": "heads",
    "build_head": "heads",
    "ETFClassifier": "dropin",
    "DRLoss": "dropin",
    "register_head": "heads",
    # losses
    "DotRegressionLoss": "losses",
    "MixupCrossEntropy": "losses",
    "LogitAdjustedLoss": "losses",
    "BalancedSoftmaxLoss": "losses",
    "FocalLoss": "losses",
    "LDAMLoss": "losses",
    "posthoc_logit_adjust": "losses",
    "register_loss": "losses",
    "Criterion": "criterion",
    "Batch": "criterion",
    # metrics
    "collapse_metrics": "metrics",
    "CollapseAccumulator": "metrics",
    # data
    "long_tail_counts": "data",
    "long_tail_indices": "data",
    "load_digits_lt": "data",
    # models
    "build_backbone": "models",
    # config and training
    "Config": "config",
    "compose": "composition",
    "train": "runner",
    "run_training": "runner",
    "RunResult": "runner",
    "Run": "rundir",
    "load_run": "inference",
    "InferenceModel": "inference",
    "Preempted": "errors",
    # errors
    "UserError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ncollapse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
