"""Method presets: a head, a loss and the method's own training recipe.

A preset has two parts:

- the **method** (``model``, ``loss``, ``allnc`` sections): always applied;
- the **recipe**: what the method's own paper trains with, as changes to the recipe it is given
  (the ETF + DR recipe of Yang et al. for the CIFAR-LT recipes): mixup, the schedule's shape,
  batch size, learning rate, weight decay. A recipe part is a dict, or a function of the config
  composed so far returning one, so that a schedule can follow the run's length. The run's
  length itself (``optim.epochs``) is never changed: every method trains for the same number of
  epochs, which keeps a comparison about equal budgets (the papers' own lengths are noted below;
  ``--epochs`` sets any length).

``--shared-recipe`` (``compose(shared_recipe=True)``) applies the method part alone: every method
on the given recipe, for a controlled comparison. ``--method NAME`` on the command line (or
``method: NAME`` in a recipe file, or ``compose(method=NAME)``) applies a preset over the recipe
it is given with, under the user's own ``--set`` values. This module is the only place presets
are defined; the recipe files of the baselines name their preset rather than repeat it. The
registry and the way a preset applies are in :mod:`ncollapse.config.presets`.

Register your own with ``METHODS.register("mine", {"model": {...}, "loss": {...},
"recipe": {"optim": {...}}})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config.presets import METHODS, RECIPE_KEY, Preset

__all__ = ["METHODS"]


def _get(data: Mapping[str, Any], section: str, key: str, default: Any) -> Any:
    value = (data.get(section) or {}).get(key)
    return default if value is None else value


def _ldam_schedule(data: Mapping[str, Any]) -> dict[str, Any]:
    # Cao et al. (2019), released CIFAR code: lr x0.01 after the first decay (epoch 160 of 200)
    # and x0.0001 after the second (180), no mixup; DRW from the first decay
    return {"optim": {"mixup_alpha": 0.0, "schedule": "step", "lr_factors": [0.01, 0.0001]}}


def _la_schedule(data: Mapping[str, Any]) -> dict[str, Any]:
    # Menon et al. (2021), released CIFAR-10-LT code: 1241 epochs, Nesterov SGD at lr 0.1, a
    # 20-epoch warm-up, x0.1 at epochs 604, 926 and 1128, L2 1e-4 on the loss (weight decay
    # 2e-4), no mixup: the same shape over this run's length
    epochs = int(_get(data, "optim", "epochs", 200))
    return {
        "optim": {
            "mixup_alpha": 0.0,
            "nesterov": True,
            "schedule": "step",
            "weight_decay": 2e-4,
            "warmup_epochs": round(epochs * 20 / 1241, 6),
            "milestones": [max(1, round(epochs * m / 1241)) for m in (604, 926, 1128)],
            "gamma": 0.1,
            "lr_factors": None,
        }
    }


def _bs_schedule(data: Mapping[str, Any]) -> dict[str, Any]:
    # Ren et al. (2020), released CIFAR-LT config: batch 512 at lr 0.05 (4x the batch, half the
    # rate of the ETF recipe's 128 at 0.1), weight decay 5e-4, cosine decay to 0 after a warm-up
    # of 800 of 13,000 iterations, no mixup
    batch = int(_get(data, "optim", "batch_size", 128))
    lr = float(_get(data, "optim", "lr", 0.1))
    epochs = int(_get(data, "optim", "epochs", 200))
    return {
        "optim": {
            "mixup_alpha": 0.0,
            "batch_size": 4 * batch,
            "lr": lr / 2,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "final_lr": 0.0,
            "warmup_epochs": round(epochs * 800 / 13000, 6),
        }
    }


_NO_MIXUP = {"optim": {"mixup_alpha": 0.0}}

#: ``etf_ce`` uses a logit scale of 10 because cosines in [-1, 1] cannot make a confident
#: softmax (the official s = 1 cripples that ablation; ``--set model.scale=1`` restores it).
_PRESETS: dict[str, Preset] = {
    # the paper's own baseline and method: the ETF + DR recipe itself
    "ce": {"model": {"head": "linear"}, "loss": {"name": "ce"}},
    "ce_frozen": {"model": {"head": "linear-frozen"}, "loss": {"name": "ce"}},
    "etf_dr": {"model": {"head": "etf"}, "loss": {"name": "dr"}},
    "etf_ce": {"model": {"head": "etf", "scale": 10.0}, "loss": {"name": "ce"}},
    # logit adjustment (Menon et al., 2021); the paper trains 1241 epochs on CIFAR-LT
    "la": {
        "model": {"head": "linear"},
        "loss": {"name": "la", "tau": 1.0},
        RECIPE_KEY: _la_schedule,
    },
    # balanced softmax (Ren et al., 2020); the paper trains 13,000 iterations of 512 (~540 epochs)
    "bs": {"model": {"head": "linear"}, "loss": {"name": "bs"}, RECIPE_KEY: _bs_schedule},
    # focal loss, as the LDAM code trains it (Cao et al., 2019)
    "focal": {
        "model": {"head": "linear"},
        "loss": {"name": "focal", "focal_gamma": 1.0},
        RECIPE_KEY: _ldam_schedule,
    },
    # LDAM's margins and scale 30 are sized for cosine logits (Cao et al.'s normed linear layer)
    # and DRW switches the class weights on at the first lr decay (epoch 160 of 200)
    "ldam_drw": {
        "model": {"head": "cosine"},
        "loss": {"name": "ldam", "drw": True},
        RECIPE_KEY: _ldam_schedule,
    },
    # AllNC's HyCon/P2P need one label per sample: no mixup is part of the method itself
    "allnc": {"model": {"head": "linear"}, "loss": {"name": "allnc"}, **_NO_MIXUP},
}
for _name, _preset in _PRESETS.items():
    METHODS.register(_name, _preset)
