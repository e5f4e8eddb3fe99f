"""Method presets: a name for a head, a loss and what the method changes in a recipe.

A preset is a small dict of config overrides. ``--method NAME`` on the command line (or
``method: NAME`` in a recipe file, or ``compose(method=NAME)``) applies it over the recipe it is
given with, under the user's own ``--set`` values. This registry is the only place presets are
defined; the recipe files of the baselines name their preset rather than repeat it.

Register your own with ``METHODS.register("mine", {"model": {...}, "loss": {...}})``.
"""

from __future__ import annotations

import copy
from typing import Any

from ..registry import Registry

__all__ = ["METHODS", "method_preset"]

METHODS: Registry[dict[str, Any]] = Registry("method", "--method")

#: ``etf_ce`` uses a logit scale of 10 because cosines in [-1, 1] cannot make a confident
#: softmax (the official s = 1 cripples that ablation; ``--set model.scale=1`` restores it).
_PRESETS: dict[str, dict[str, Any]] = {
    "ce": {"model": {"head": "linear"}, "loss": {"name": "ce"}},
    "ce_frozen": {"model": {"head": "linear-frozen"}, "loss": {"name": "ce"}},
    "etf_dr": {"model": {"head": "etf"}, "loss": {"name": "dr"}},
    "etf_ce": {"model": {"head": "etf", "scale": 10.0}, "loss": {"name": "ce"}},
    "la": {"model": {"head": "linear"}, "loss": {"name": "la", "tau": 1.0}},
    "bs": {"model": {"head": "linear"}, "loss": {"name": "bs"}},
    "focal": {"model": {"head": "linear"}, "loss": {"name": "focal"}},
    # LDAM's margins and scale 30 are sized for cosine logits (Cao et al.'s normed linear layer)
    # and DRW switches the class weights on at the first lr decay (epoch 160 of 200)
    "ldam_drw": {"model": {"head": "cosine"}, "loss": {"name": "ldam", "drw": True}},
    # AllNC's HyCon/P2P need one label per sample, so its preset trains without mixup
    "allnc": {
        "model": {"head": "linear"},
        "loss": {"name": "allnc"},
        "optim": {"mixup_alpha": 0.0},
    },
}
for _name, _preset in _PRESETS.items():
    METHODS.register(_name, _preset)


def method_preset(name: str) -> dict[str, Any]:
    """A copy of the overrides of preset ``name`` (ConfigError naming the closest otherwise)."""
    return copy.deepcopy(METHODS.get(name))
