"""Registries: things created by name (datasets, backbones, heads, losses, optimisers, schedules,
method presets).

One class serves them all, on the pattern of timm's model registry: a module defines a factory
and registers it; the composition layer creates it from the name in the config; an unknown name
gets the closest valid one. The registry is the single list of valid names: the config checks,
the ``--help`` texts, the error messages and ``docs/config.md`` all read it.

A registry bound to a config key (``loss.name``) also keeps what each entry declares about the
config: the keys it reads (``options``, added to the config with their type, default and
meaning), what it needs of other keys (``requires``: a loss that needs a certain head), and any
further check of a whole config (``check``)::

    LOSSES = Registry("loss", "loss.name", config=Config)

    @LOSSES.register("la", options={"loss.tau": option(1.0, "logit-adjustment temperature")})
    def build_la(ctx): ...

    LOSSES.get("la")        # the builder; LOSSES.names() the valid names
    LOSSES.entry("la")      # the builder with its declarations
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from .errors import ConfigError, UserError, did_you_mean

__all__ = ["Entry", "Registry", "call_factory"]

T = TypeVar("T")


class ConfigTree(Protocol):
    """What a registry needs of the config class it declares keys in
    (:class:`ncollapse.config.Section`)."""

    @classmethod
    def declare(cls, key: str, opt: Any, user: tuple[str, str] | None = None) -> Any: ...

    @classmethod
    def undeclare(cls, key: str, user: tuple[str, str]) -> None: ...

    @classmethod
    def bind(cls, key: str, registry: Any) -> None: ...


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and what it declares: ``options`` (dotted config key -> option, the
    keys it reads), ``requires`` (dotted config key -> the values it works with), ``check`` (a
    test of the whole config: raises a ConfigError, or warns) and ``info`` (anything else its
    owner keeps with it)."""

    name: str
    obj: T
    options: Mapping[str, Any] = field(default_factory=dict)
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> object mapping with a registering decorator and did-you-mean lookups.

    ``kind`` names what is registered ("loss", "head", ...) in messages; ``key`` is the config
    key that selects an entry (for example ``loss.name``), named in the error of :meth:`get`.
    ``config``: the config class (:class:`ncollapse.config.Config`) in which ``key`` lives and
    the entries declare their options; ``key`` then takes this registry's names as its valid
    values and the entry registered with ``default=True`` as its default. ``error``: the
    :class:`~ncollapse.errors.UserError` class of an unknown name.
    """

    def __init__(
        self,
        kind: str,
        key: str | None = None,
        *,
        config: type[ConfigTree] | None = None,
        error: type[UserError] = ConfigError,
    ) -> None:
        self.kind = kind
        self.key = key
        self.config = config
        self.error = error
        self.default: str | None = None
        self._entries: dict[str, Entry[T]] = {}
        self._checks: list[Callable[[Any], None]] = []
        if config is not None and key is not None:
            config.bind(key, self)

    def register(
        self,
        name: str,
        obj: T | None = None,
        *,
        default: bool = False,
        options: Mapping[str, Any] | None = None,
        requires: Mapping[str, Any] | None = None,
        check: Callable[[Any], None] | None = None,
        replace: bool = False,
        **info: Any,
    ) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator. A second registration
        of a name is an error unless ``replace=True``. ``default``: the name a config gets when
        it names none. ``options``, ``requires``, ``check``, ``info``: see :class:`Entry`."""
        if (options or default) and self.config is None:
            raise ValueError(f"the {self.kind} registry is bound to no config key")

        def deco(o: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"{self.kind} names must be non-empty without spaces: {name!r}")
            if name in self._entries:
                self.unregister(name)
            declared: dict[str, Any] = {}
            for key, opt in (options or {}).items():
                assert self.config is not None and self.key is not None
                declared[key] = self.config.declare(key, opt, (self.key, name))
            allowed = {
                k: (v,) if isinstance(v, str) else tuple(v) for k, v in (requires or {}).items()
            }
            self._entries[name] = Entry(name, o, declared, allowed, check, dict(info))
            if default:
                self.default = name
            return o

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plug-ins that registered something temporarily); the
        config keys only it declared go with it."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        if self.default == name:
            self.default = None
        for key in entry.options:
            assert self.config is not None and self.key is not None
            self.config.undeclare(key, (self.key, name))

    def add_check(self, check: Callable[[Any], None]) -> Callable[[Any], None]:
        """A test of every config, whichever entry it selects (a decorator too): for keys
        that several entries share, such as a rule about which entries may set them."""
        self._checks.append(check)
        return check

    def get(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; the registry's error naming the closest valid one otherwise.
        ``key`` replaces the registry's own key in that message (a command whose option has
        another name, like ``--methods`` for ``--method``)."""
        return self.entry(name, key).obj

    def entry(self, name: str, key: str | None = None) -> Entry[T]:
        """The :class:`Entry` of ``name`` (what :meth:`get` looks up)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            key = key or self.key
            where = f" ({key})" if key else ""
            raise self.error(
                f"unknown {self.kind} {name!r}{where}" + did_you_mean(str(name), self._entries)
            ) from None

    def check(self, cfg: Any) -> None:
        """Check ``cfg`` against the entry its key selects: what the entry requires of other
        keys, its own check, then the registry's checks (:meth:`add_check`)."""
        if self.key is None:
            return
        name = _value(cfg, self.key)
        entry = self.entry(name)
        for key, allowed in entry.requires.items():
            value = _value(cfg, key)
            if value not in allowed:
                why = entry.info.get("why")
                raise ConfigError(
                    f"{self.key}={name}{' ' + why + ' and' if why else ''} needs "
                    f"{key}={' or '.join(allowed)} (got {key}={value})"
                )
        if entry.check is not None:
            entry.check(cfg)
        for check in self._checks:
            check(cfg)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, e.obj) for name, e in self._entries.items()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def call_factory(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``factory``; a ``ValueError`` it raises becomes a :class:`ConfigError` (a user's
    impossible setting, e.g. an ETF wider than the feature)."""
    try:
        return factory(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
