"""Dataset registry: ``data.name`` -> a loader ``(cfg) -> DataBundle``.

Each reader module registers its loader with :func:`register_dataset`; :func:`load_data` looks the
name up here. :data:`DATASETS` is the single list of dataset names (the config checks read it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import DataError, did_you_mean

if TYPE_CHECKING:
    from .base import DataBundle

__all__ = ["DATASETS", "dataset_names", "get_loader", "register_dataset"]

Loader = Callable[[Any], "DataBundle"]

#: name -> loader, in registration order
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(cfg) -> DataBundle`` under ``name`` (``data.name``).

    ``cfg`` is a :class:`~ncollapse.config.DataConfig` (or any object with its attributes).
    """

    def deco(fn: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"dataset names must be non-empty without spaces: {name!r}")
        DATASETS[name] = fn
        return fn

    return deco


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return tuple(DATASETS)


def get_loader(name: str) -> Loader:
    """The loader for ``name``; an unknown name raises :class:`DataError` naming the closest one."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown dataset {name!r}" + did_you_mean(str(name), DATASETS)) from None
