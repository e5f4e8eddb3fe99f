"""Dataset registry: ``data.name`` -> a loader ``(cfg) -> DataBundle``.

Each reader module registers its loader with :func:`register_dataset`, with the ``data.*`` keys
only it reads; :func:`load_data` looks the name up here. :data:`DATASETS` is the single list of
dataset names (the config checks read it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Config, Option
from ..errors import DataError
from ..registry import Registry

__all__ = ["DATASETS", "dataset_names", "get_loader", "register_dataset"]

#: ``loader(data_cfg) -> DataBundle``
Loader = Callable[[Any], Any]

#: name -> loader, in registration order
DATASETS: Registry[Loader] = Registry("dataset", "data.name", config=Config, error=DataError)


def register_dataset(
    name: str,
    *,
    options: dict[str, Option] | None = None,
    default: bool = False,
    **info: Any,
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(cfg) -> DataBundle`` under ``name`` (``data.name``).

    ``cfg`` is a :class:`~ncollapse.config.DataConfig` (or any object with its attributes).
    ``options``: the ``data.*`` keys only this dataset reads, added to the config;
    ``default``: the dataset of a config that names none (its ``recipe=`` overrides are the
    settings a run without a recipe gets)."""
    return DATASETS.register(name, options=options, default=default, **info)  # type: ignore[no-any-return]


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return DATASETS.names()


def get_loader(name: str) -> Loader:
    """The loader for ``name``; an unknown name raises :class:`DataError` naming the closest one."""
    return DATASETS.get(name)
