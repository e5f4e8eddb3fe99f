"""Registries: things created by name (backbones, heads, losses, datasets, method presets).

One small class serves them all, on the pattern of timm's model registry: a module defines a
factory and registers it with a decorator; the composition layer creates it from the name in the
config; an unknown name gets the closest valid one. The registry is the single list of valid
names: the config checks, the ``--help`` texts and the error messages all read it.

    HEADS = Registry("head")

    @HEADS.register("linear")
    def make_linear(in_features, num_classes, **kw): ...

    HEADS.get("linear")   # the factory; HEADS.names() the valid names
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with a registering decorator and did-you-mean lookups.

    ``kind`` names what is registered ("loss", "head", ...) in messages; ``key`` is the config
    key that selects an entry (for example ``loss.name``), named in the error of :meth:`get`.
    """

    def __init__(self, kind: str, key: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator. A second registration
        of a name is an error unless ``replace=True``."""

        def deco(o: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"{self.kind} names must be non-empty without spaces: {name!r}")
            self._items[name] = o
            return o

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plug-ins that registered something temporarily)."""
        self._items.pop(name, None)

    def get(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; a :class:`ConfigError` naming the closest valid one otherwise.
        ``key`` replaces the registry's own key in that message (a command whose option has
        another name, like ``--methods`` for ``--method``)."""
        try:
            return self._items[name]
        except KeyError:
            key = key or self.key
            where = f" ({key})" if key else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{where}" + did_you_mean(str(name), self._items)
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def call_factory(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``factory``; a ``ValueError`` it raises becomes a :class:`ConfigError` (a user's
    impossible setting, e.g. an ETF wider than the feature)."""
    try:
        return factory(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
