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

__all__ = [
    "DATASETS",
    "PROTOCOL_IMBALANCE",
    "dataset_names",
    "default_imbalance",
    "get_loader",
    "register_dataset",
]

#: ``loader(data_cfg) -> DataBundle``
Loader = Callable[[Any], Any]

#: the imbalance factor of a balanced benchmark whose config sets none (``data.imbalance`` null):
#: the long-tail protocol's ratio 100
PROTOCOL_IMBALANCE = 0.01

#: name -> loader, in registration order
DATASETS: Registry[Loader] = Registry("dataset", "data.name", config=Config, error=DataError)


def register_dataset(
    name: str,
    *,
    options: dict[str, Option] | None = None,
    default: bool = False,
    check: Callable[[Any], None] | None = None,
    **info: Any,
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(cfg) -> DataBundle`` under ``name`` (``data.name``).

    ``cfg`` is a :class:`~ncollapse.config.DataConfig` (or any object with its attributes).
    ``options``: the ``data.*`` keys only this dataset reads, added to the config;
    ``default``: the dataset of a config that names none (its ``recipe=`` overrides are the
    settings a run without a recipe gets). ``imbalance=``: the factor a config that sets no
    ``data.imbalance`` gets (default :data:`PROTOCOL_IMBALANCE`); ``imbalance=None`` for a
    user's own data, which is then trained on as given (:func:`default_imbalance`). ``check``:
    a test of a whole config that selects this dataset (raises a ConfigError naming the fix)."""
    return DATASETS.register(name, options=options, default=default, check=check, **info)  # type: ignore[no-any-return]


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return DATASETS.names()


def get_loader(name: str) -> Loader:
    """The loader for ``name``; an unknown name raises :class:`DataError` naming the closest one."""
    return DATASETS.get(name)


def default_imbalance(name: str) -> float | None:
    """The imbalance factor of dataset ``name`` when ``data.imbalance`` is null: what it
    registered (``imbalance=``), else :data:`PROTOCOL_IMBALANCE`; None for data used as given
    (image folders, list files: every image, no long-tail subset)."""
    if name not in DATASETS:
        return PROTOCOL_IMBALANCE
    info = DATASETS.entry(name).info
    return info["imbalance"] if "imbalance" in info else PROTOCOL_IMBALANCE
