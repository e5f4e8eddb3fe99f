"""The configuration reference (``docs/config.md``), generated from the config declarations.

Every key, its type, its default, its value when no recipe is given (the embedded digits), its
valid values and its meaning come from the keys' declarations: the built-in sections in
``config/schema.py`` and the keys each component declares with its registry (a loss's
constants, a head's options), with the registered names a key selects among. The page
therefore cannot drift from the code (a test compares the committed page with
:func:`config_reference`). It sits above every component because it reads them all.
Regenerate it with::

    python -m ncollapse.reference --write docs/config.md     # or: make docs-config
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from .composition import compose
from .config import METHODS, Config, config_to_dict, method_preset, recipe_names
from .config.section import Option, Section, is_section, type_name

__all__ = ["config_reference", "meaning"]

HEADER = """\
# Configuration reference

<!-- Generated from the declarations of the config keys (src/ncollapse/config/schema.py and each
component's registration) by `python -m ncollapse.reference --write docs/config.md` (make
docs-config); a test fails when this page and the code differ. Edit the declarations, not this
page. -->

A run is described by one typed config. It is built in layers, each overriding the one before:
the defaults below (the official CIFAR-LT recipe of Yang et al., 2022), the embedded digits
settings when no recipe is given (column *no recipe*), a recipe (`--config NAME`: one of the
files listed at the end of this page, shipped with the package, or any YAML file) with its
`extends:` chain, a method preset (`--method`), `--set key=value` overrides, and `--epochs N`, which scales the
schedule (milestones, DRW, mixup and EMA epochs) proportionally and keeps the warm-up (at most a
sixth of the new length). `ncollapse train ...
--print-config` prints the result; every run saves it as `config.yaml`.

Set a key on the command line with `--set section.key=value` (YAML syntax for the value:
`--set optim.milestones=[120,160]`, `--set data.root=null`), in a recipe file as nested YAML,
or from Python as a nested dict or `"section.key=value"` strings:

```python
import ncollapse

cfg = ncollapse.compose(overrides={"optim": {"lr": 0.05}, "eval": {"collapse_every": 2}})
print(cfg.optim.lr, cfg.eval.collapse_every, cfg.model.backbone)
```

An unknown key or a value of the wrong type is refused before anything runs, with the closest
valid key named. Keys marked *choice* take one of the listed names; the lists of datasets,
backbones, heads, losses, optimisers and schedules are registries that grow when you register
your own ([architecture](architecture.md#how-to-add)), and a key marked *for* is read only by
the registered things named there (it is declared with them). Only `run.*` keys (where and how
a run executes) may differ when a run is resumed.
"""


def meaning(key: str, opt: Option) -> str:
    """The meaning column of ``key``: its valid values, the registered things that read it, and
    its doc."""
    parts = []
    listed = opt.valid_values()
    if listed is not None:
        parts.append(f"*choice*: {', '.join(listed)}.")
    if opt.users:
        by: dict[str, list[str]] = {}
        for selector, name in opt.users:
            by.setdefault(selector, []).append(name)
        parts.append(
            "*for* " + "; ".join(f"{sel}={', '.join(names)}" for sel, names in by.items()) + "."
        )
    if opt.doc:
        parts.append(opt.doc)
    return " ".join(parts)


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _sections() -> list[tuple[str | None, type[Section]]]:
    """(key prefix, section): the top-level keys first, then each section in order."""
    out: list[tuple[str | None, type[Section]]] = [(None, Config)]
    for name, opt in Config.options().items():
        if is_section(opt.type):
            out.append((name, opt.type))
    return out


def config_reference() -> str:
    """The whole ``docs/config.md`` page, from the declarations of the keys."""
    defaults = config_to_dict(Config())
    no_recipe = config_to_dict(compose())
    parts = [HEADER]
    for section, cls in _sections():
        title = "Top level" if section is None else f"`{section}`"
        doc = inspect.getdoc(cls) or ""
        if section is None:
            doc = doc.replace("The whole run. ", "")
        parts.append(f"\n## {title}\n\n{' '.join(doc.split())}\n")
        parts.append("| key | type | default | no recipe | meaning |")
        parts.append("|---|---|---|---|---|")
        base = defaults if section is None else defaults[section]
        digits = no_recipe if section is None else no_recipe[section]
        for name, opt in cls.options().items():
            if is_section(opt.type):
                continue
            key = name if section is None else f"{section}.{name}"
            value, small = base[name], digits[name]
            digit_cell = "" if small == value else f"`{_value(small)}`"
            if key == "name":  # set from the recipe's or the method's name
                digit_cell = ""
            parts.append(
                f"| `{key}` | {_cell(type_name(opt.type))} | `{_cell(_value(value))}` | "
                f"{_cell(digit_cell)} | {_cell(meaning(key, opt))} |"
            )
    parts.append(_recipes())
    return "\n".join(parts) + "\n"


def _recipes() -> str:
    lines = [
        "\n## Recipes and method presets\n",
        "Recipes shipped with the package (`ncollapse train --config NAME`; the files are in "
        "`configs/` of a checkout and in `ncollapse/configs/` of an installed package):\n",
    ]
    lines += [f"- `{name}`" for name in recipe_names()]
    lines.append(
        "\nMethod presets (`--method NAME`, `ncollapse sweep --methods A,B`): "
        + ", ".join(f"`{m}`" for m in METHODS)
        + ". A preset sets the method's keys and, for the baselines, its own paper's training "
        "recipe (shown here over `cifar10_lt`, 200 epochs; `--shared-recipe` leaves the recipe "
        "out); the recipe supplies the rest.\n"
    )
    lines.append("| preset | method | its own recipe over cifar10_lt |")
    lines.append("|---|---|---|")
    base = config_to_dict(compose("cifar10_lt"))
    for name in METHODS:
        method = method_preset(name, base, shared_recipe=True)
        full = method_preset(name, base)
        own = {
            s: {k: v for k, v in vals.items() if method.get(s, {}).get(k, _MISSING) != v}
            for s, vals in full.items()
        }
        cells = []
        for part in (method, own):
            flat = [
                f"{section}.{k}={_value(v)}"
                for section, vals in part.items()
                for k, v in vals.items()
            ]
            cells.append(_cell(", ".join(f"`{x}`" for x in flat)) if flat else "")
        lines.append(f"| `{name}` | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


_MISSING = object()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ncollapse.reference",
        description="Print (or write, or check) the configuration reference page.",
    )
    parser.add_argument("--write", metavar="PATH", help="write the page to PATH")
    parser.add_argument(
        "--check", metavar="PATH", help="exit 1 if the page at PATH differs from the code"
    )
    args = parser.parse_args(argv)
    page = config_reference()
    if args.check:
        current = Path(args.check).read_text() if Path(args.check).is_file() else ""
        if current != page:
            print(
                f"{args.check} is out of date: run python -m ncollapse.reference "
                f"--write {args.check}",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.write:
        Path(args.write).write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
