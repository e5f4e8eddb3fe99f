"""Method presets: named sets of overrides (a head, a loss and the method's own training recipe)
that a recipe file (``method: NAME``), ``--method NAME`` or ``compose(method=NAME)`` applies.

A preset has two parts:

- the **method** (its sections other than ``recipe``): always applied;
- the **recipe** (``recipe``): what the method's own paper trains with, as changes to the recipe
  it is given, a dict or a function of the config composed so far returning one (so that a
  schedule can follow the run's length). ``--shared-recipe`` (``shared_recipe=True``) leaves it
  out: every method on the given recipe, for a controlled comparison.

:data:`METHODS` is the registry; the presets themselves are registered by
:mod:`ncollapse.methods`. Register your own with ``METHODS.register("mine", {"model": {...},
"loss": {...}, "recipe": {"optim": {...}}})``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from ..registry import Registry

__all__ = ["METHODS", "RECIPE_KEY", "method_preset"]

RECIPE_KEY = "recipe"

Preset = dict[str, Any]
METHODS: Registry[Preset] = Registry("method", "--method")


def method_preset(
    name: str, base: Mapping[str, Any] | None = None, *, shared_recipe: bool = False
) -> dict[str, Any]:
    """The overrides of preset ``name`` (ConfigError naming the closest otherwise) over the
    config composed so far, ``base`` (nested dicts; missing keys take the defaults): its method
    part and, unless ``shared_recipe``, its own recipe."""
    preset = METHODS.get(name)
    out = {k: copy.deepcopy(v) for k, v in preset.items() if k != RECIPE_KEY}
    recipe: Any = preset.get(RECIPE_KEY)
    if recipe is not None and not shared_recipe:
        if isinstance(recipe, Callable):
            recipe = recipe(base or {})
        for section, values in recipe.items():
            out[section] = {**out.get(section, {}), **copy.deepcopy(values)}
    return out
