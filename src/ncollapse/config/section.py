"""Config sections and their keys: what a key is (type, default, meaning, valid values) and how
the set of keys grows.

A :class:`Section` lists its keys as :func:`option` class attributes::

    class OptimConfig(Section, key="optim"):
        lr: float = option(0.1, "peak learning rate (after the warm-up)", range=(0, INF, "()"))

and a component adds its own with :meth:`Section.declare`, usually through its registry
(:class:`ncollapse.registry.Registry`), which also marks the registered name that reads the key::

    LOSSES.register("mine", build_mine, options={"loss.mine_weight": option(1.0, "its weight")})

An instance holds one value per key, as attributes (``cfg.loss.tau``). Nothing here knows a
component: the valid values of a key that selects a registered thing come from the registry
bound to it (:meth:`Section.bind`), and ``docs/config.md`` is generated from these declarations.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

from ..errors import ConfigError, did_you_mean

__all__ = ["INF", "Option", "Section", "Selector", "option", "section"]

INF = math.inf


class Selector(Protocol):
    """What a key that selects a registered thing asks of its registry."""

    default: str | None

    def names(self) -> tuple[str, ...]: ...


class Option:
    """One config key: its type, default and meaning, the values it accepts, and how
    ``--epochs`` rescales it.

    ``choices``: the valid values (a tuple), or None for any value of the type; a key bound to
    a registry takes that registry's names. ``range``: ``(low, high, "[)")`` for numbers (the
    brackets say which ends are included; ``None`` values pass). ``scale``: for a key counted in
    epochs, ``scale(value, factor, epochs)`` gives its value in a schedule ``factor`` times as
    long (``epochs`` epochs). ``check(key, value)``: any further test, raising
    :class:`~ncollapse.errors.ConfigError`.
    """

    def __init__(
        self,
        default: Any = None,
        doc: str = "",
        *,
        type: Any = None,
        choices: Sequence[str] | None = None,
        range: tuple[float, float, str] | None = None,
        scale: Callable[[Any, float, int], Any] | None = None,
        check: Callable[[str, Any], None] | None = None,
    ) -> None:
        if type is None and isinstance(default, (bool, int, float, str)):
            type = default.__class__
        self.default = default
        self.doc = doc
        self.type = type
        self.choices = tuple(choices) if choices is not None else None
        self.range = range
        self.scale = scale
        self.check = check
        self.registry: Selector | None = None  # the registry whose names this key selects
        #: (selector key, name) of the registered things that read this key, e.g.
        #: ("loss.name", "mine") for ``loss.mine_weight``; empty for keys every run reads
        self.users: list[tuple[str, str]] = []
        self.added = False  # declared by a component (not written in a Section class)

    def value(self) -> Any:
        """A fresh default value (a new section, list or dict each time)."""
        if isinstance(self.default, type) and issubclass(self.default, Section):
            return self.default()
        if self.registry is not None and self.registry.default is not None:
            return self.registry.default
        return copy.deepcopy(self.default)

    def valid_values(self) -> tuple[str, ...] | None:
        """The values the key takes, when it takes one of a list."""
        if self.registry is not None:
            return self.registry.names()
        return self.choices

    def validate(self, key: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``key`` when ``value`` is not one it takes."""
        allowed = self.valid_values()
        if allowed is not None and value not in allowed:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}"
                + did_you_mean(str(value), allowed)
            )
        if self.range is not None and value is not None:
            low, high, closed = self.range
            for v in value if isinstance(value, list) else [value]:
                ok_low = v >= low if closed[0] == "[" else v > low
                ok_high = v <= high if closed[1] == "]" else v < high
                if not (ok_low and ok_high):
                    hi = "inf)" if high == INF else f"{high:g}{closed[1]}"
                    raise ConfigError(
                        f"config key '{key}' must be in {closed[0]}{low:g}, {hi}, got {value!r}"
                    )
        if self.check is not None:
            self.check(key, value)

    def __repr__(self) -> str:
        return f"Option({self.default!r}, {self.doc!r})"


def option(default: Any = None, doc: str = "", **kw: Any) -> Any:
    """An :class:`Option`, typed ``Any`` so that ``lr: float = option(0.1, "...")`` reads as a
    float to a type checker (the annotation gives the key's type)."""
    return Option(default, doc, **kw)


def section(cls: type[Section], doc: str = "") -> Any:
    """A key that holds a whole section (``Config.optim``)."""
    return Option(cls, doc or (cls.__doc__ or "").split("\n")[0], type=cls)


class Section:
    """A group of config keys with their values; subclasses list keys with :func:`option` and
    name their place with ``key="loss"`` (empty for the top level)."""

    key: ClassVar[str] = ""
    _options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, key: str = "", **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.key = key
        hints = typing.get_type_hints(cls)
        own = {}
        for name, value in list(vars(cls).items()):
            if isinstance(value, Option):
                if value.type is None or name in hints:
                    value.type = hints.get(name, value.type)
                own[name] = value
                delattr(cls, name)  # an instance holds the value; the class, its options
        cls._options = {**cls._options, **own}

    def __init__(self, **values: Any) -> None:
        for name, opt in self._options.items():
            setattr(self, name, opt.value())
        for name, value in values.items():
            if name not in self._options:
                raise TypeError(
                    f"{type(self).__name__} has no key {name!r}" + did_you_mean(name, self._options)
                )
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # a key declared after this instance was made (a component imported later): its default
        opt = type(self)._options.get(name)
        if opt is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = opt.value()
        setattr(self, name, value)
        return value

    # ------------------------------------------------------------------ the keys
    @classmethod
    def options(cls) -> dict[str, Option]:
        """Key name -> :class:`Option`, in declaration order (built-in keys first)."""
        return dict(cls._options)

    @classmethod
    def walk(cls, prefix: str = "") -> Iterator[tuple[str, Option]]:
        """Every key below this section as (dotted key, option), sections before their keys."""
        for name, opt in cls._options.items():
            yield prefix + name, opt
            if is_section(opt.type):
                yield from opt.type.walk(prefix + name + ".")

    @classmethod
    def find(cls, key: str) -> tuple[type[Section], str]:
        """The section holding the dotted ``key`` and its last part."""
        *path, leaf = key.split(".")
        here: type[Section] = cls
        for part in path:
            opt = here._options.get(part)
            if opt is None or not is_section(opt.type):
                raise KeyError(f"no config section {part!r} in {key!r}")
            here = opt.type
        return here, leaf

    @classmethod
    def declare(cls, key: str, opt: Option, user: tuple[str, str] | None = None) -> Option:
        """Add the dotted ``key`` (``"loss.tau"``) with ``opt`` and return the option in force.
        Declaring the same :class:`Option` object again only adds ``user``; another option
        under a taken key is an error (two components disagreeing on one key)."""
        here, leaf = cls.find(key)
        current = here._options.get(leaf)
        if current is not None and current is not opt:
            raise ValueError(f"config key {key!r} is already declared")
        if current is None:
            if opt.type is None:
                raise ValueError(f"config key {key!r} needs a type (option(..., type=...))")
            opt.added = True
            here._options = {**here._options, leaf: opt}
        if user is not None and user not in opt.users:
            opt.users.append(user)
        return opt

    @classmethod
    def undeclare(cls, key: str, user: tuple[str, str]) -> None:
        """Drop ``user`` from ``key``, and the key itself when it was declared by users alone
        and none is left (for plug-ins registered temporarily, as in tests)."""
        here, leaf = cls.find(key)
        opt = here._options.get(leaf)
        if opt is None or user not in opt.users:
            return
        opt.users.remove(user)
        if not opt.users and opt.added:
            here._options = {k: v for k, v in here._options.items() if k != leaf}

    @classmethod
    def bind(cls, key: str, registry: Selector) -> None:
        """Make the dotted ``key`` select a name of ``registry``: its valid values and its
        default (the name registered as the default) come from there."""
        here, leaf = cls.find(key)
        here._options[leaf].registry = registry

    @classmethod
    def set_choices(cls, key: str, choices: Sequence[str]) -> None:
        """The values the dotted ``key`` accepts, given by the component that implements them."""
        here, leaf = cls.find(key)
        here._options[leaf].choices = tuple(choices)

    # ------------------------------------------------------------------ values
    def to_dict(self) -> dict[str, Any]:
        """The values as plain nested dicts, keys in declaration order."""
        out = {}
        for name in self._options:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, Section) else copy.deepcopy(value)
        return out

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes``."""
        new = copy.deepcopy(self)
        for name, value in changes.items():
            if name not in self._options:
                raise TypeError(f"{type(self).__name__} has no key {name!r}")
            setattr(new, name, value)
        return new

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in self._options)
        return f"{type(self).__name__}({inner})"


def is_section(tp: Any) -> bool:
    """Whether a key's type is a whole section."""
    return isinstance(tp, type) and issubclass(tp, Section)


def type_name(tp: Any) -> str:
    """A key's type as the docs write it: ``float or null``, ``list[int]``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is list:
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))
