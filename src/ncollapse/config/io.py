"""Config files and dicts: typed coercion, merging, ``--set`` parsing, recipe files and their
``extends:`` / ``method:`` keys, and the recipes shipped with the package."""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, closest, did_you_mean
from .presets import METHODS, method_preset
from .schema import Config
from .section import Section, is_section

__all__ = [
    "RECIPES_DIR",
    "all_keys",
    "complete_config_dict",
    "config_diff",
    "config_to_dict",
    "deep_merge",
    "dict_to_config",
    "find_config",
    "parse_override",
    "read_config_file",
    "recipe_names",
]

#: the recipes shipped with the package (a checkout links ``configs/`` at its root to it)
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs"


def _field_types(cls: type[Section]) -> dict[str, Any]:
    return {name: opt.type for name, opt in cls.options().items()}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if is_section(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; give it a mapping, not {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' takes a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None:
        raise ConfigError(f"config key '{key}' cannot be null")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in (
                "true",
                "yes",
                "on",
                "1",
                "false",
                "no",
                "off",
                "0",
            ):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if math.isfinite(number):
                return number
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key '{key}' takes {getattr(tp, '__name__', tp)}, got {value!r}"
        ) from None
    if tp is float:
        raise ConfigError(f"config key '{key}' takes a finite number, got {value!r}")
    return value


def _from_dict(cls: type[Section], data: dict[str, Any], prefix: str = "") -> Any:
    hints = _field_types(cls)
    names = list(hints)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            key = str(key)  # YAML allows keys that are not strings ("?" alone is {None: None})
            # every key, so one in the wrong section is found (``loss.lr`` -> ``optim.lr``);
            # with none close, the keys of this section
            best = closest(prefix + key, all_keys(Config) if prefix else all_keys(cls))
            hint = (
                f"; did you mean '{best}'?"
                if best
                else f"; {prefix.rstrip('.') or 'the top level'} has: "
                + ", ".join(sorted(prefix + n for n in names))
            )
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    obj = cls(**{k: v for k, v in kwargs.items() if k in names})
    return obj


def all_keys(cls: type[Section], prefix: str = "") -> list[str]:
    """Every dotted key below ``cls``, sections included."""
    return [key for key, _ in cls.walk(prefix)]


def config_to_dict(cfg: Section) -> dict[str, Any]:
    """The config as plain nested dicts (what the run directory stores)."""
    return cfg.to_dict()


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``'optim.lr=0.05'`` -> ``{'optim': {'lr': 0.05}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set takes key=value (for example optim.lr=0.05), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set takes key=value, the key is empty in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    cur = nested
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return nested


def dict_to_config(data: dict[str, Any]) -> Config:
    """A :class:`Config` from nested dicts; unknown keys and wrong types raise ConfigError."""
    return _from_dict(Config, data)


def recipe_names() -> list[str]:
    """The names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []


def find_config(name: str | Path) -> Path:
    """A recipe path: an existing file, else a name looked up in ``./configs`` and in the
    recipes shipped with the package. An unknown name lists the known ones."""
    p = Path(name)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"config {p} is a directory; give a recipe file (.yaml) or a recipe name")
    text = str(name)
    stem = text[:-5] if text.endswith(".yaml") else text
    for c in (Path("configs") / f"{stem}.yaml", RECIPES_DIR / f"{stem}.yaml"):
        if c.is_file():
            return c
    known = recipe_names()
    hint = did_you_mean(stem, known) if known else ""
    if known and "did you mean" in hint:
        hint += f" (known recipes: {', '.join(known)})"
    raise ConfigError(f"config '{name}' is neither a file nor a known recipe{hint}")


def _read_mapping(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {p}: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ConfigError(
            f"config file {p} is empty; give at least one key (or leave out --config for the "
            "embedded defaults)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def _chain(path: Path, depth: int = 0) -> list[tuple[dict[str, Any], str | None]]:
    """The ``extends:`` chain of a recipe, root first: (own keys, own ``method:``) per file."""
    if depth > 8:
        raise ConfigError(f"config file {path}: 'extends' nests too deeply (a cycle?)")
    data = _read_mapping(path)
    parent = data.pop("extends", None)
    method = data.pop("method", None)
    if method is not None and not isinstance(method, str):
        raise ConfigError(f"config file {path}: 'method' takes a preset name, got {method!r}")
    if method is not None:
        METHODS.get(method, f"'method:' in {path}")  # named where it was written
    chain = _chain(path.parent / str(parent), depth + 1) if parent is not None else []
    return [*chain, (data, method)]


def read_config_file(
    path: str | Path, method: str | None = None, *, shared_recipe: bool = False
) -> dict[str, Any]:
    """A recipe file as one dict. ``extends: other.yaml`` reads that file first (relative to
    this one) and merges this one over it. ``method: NAME`` applies that method preset at its
    place in the chain: over the files it extends, under the keys of the file that names it
    (only the most specific ``method:`` counts). A ``method`` given here (``--method``) replaces
    the file's preset and applies over the whole file, as a command-line choice should. A
    preset's own training recipe is left out with ``shared_recipe`` (see
    :mod:`ncollapse.config.methods`)."""
    chain = _chain(Path(path))
    declared = [i for i, (_, m) in enumerate(chain) if m is not None]
    at = declared[-1] if declared and method is None else None
    data: dict[str, Any] = {}
    for i, (own, name) in enumerate(chain):
        if i == at:
            data = deep_merge(data, method_preset(str(name), data, shared_recipe=shared_recipe))
        data = deep_merge(data, own)
    if method is not None:
        data = deep_merge(data, method_preset(method, data, shared_recipe=shared_recipe))
    return data


def complete_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict with the keys added to :class:`Config` since it was written filled in
    with their defaults (which keep the old behaviour), so that an older run compares equal to
    the same config today. Unknown keys still raise the usual :class:`ConfigError`."""
    return config_to_dict(_from_dict(Config, data))


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Lines ``key: a -> b`` for every leaf that differs between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_diff(va, vb, prefix + key + "."))
        elif va != vb:
            out.append(f"{prefix}{key}: {json.dumps(va)} -> {json.dumps(vb)}")
    return out
