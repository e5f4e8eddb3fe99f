"""The configuration reference (``docs/config.md``), generated from the config dataclasses.

Every key, its type, its default, its value when no recipe is given (the embedded digits) and
its comment come from ``schema.py`` itself: the dataclass fields in order, the comment on a
field's line and the comment lines just above it. The page therefore cannot drift from the code
(a test compares the committed page with :func:`config_reference`). Regenerate it with::

    python -m ncollapse.config.reference --write docs/config.md     # or: make docs-config
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
from pathlib import Path
from typing import Any

from . import schema
from .io import config_to_dict
from .schema import Config

__all__ = ["DESCRIPTIONS", "choices", "config_reference", "field_comments"]

#: meanings of the keys that ``schema.py`` leaves without a comment (the names say most of it);
#: a comment in ``schema.py`` takes precedence, and a test flags entries that are no longer
#: needed or name no key
DESCRIPTIONS = {
    "name": "the run's name (recipes and method presets set it; `run.name` names the directory)",
    "seed": "training seed: initialisation, data order, augmentation and mixup draws",
    "data.val_per_class": "`val: unused`: at most this many validation images per class",
    "data.test_list": "list-file datasets: the test list (same format)",
    "data.val_list": "list-file datasets: an optional validation list (same format)",
    "optim.lr": "peak learning rate of SGD (after the warm-up)",
    "optim.momentum": "SGD momentum",
    "optim.weight_decay": "L2 weight decay, on all parameters (BatchNorm included, as the "
    "released code)",
    "optim.nesterov": "Nesterov momentum",
    "optim.batch_size": "training mini-batch size (DR's per-batch class weights are computed "
    "over it)",
    "optim.epochs": "training epochs (`--epochs N` also scales the milestones; the warm-up stays, at most N/6)",
    "optim.milestones": "step schedule: epochs at which the rate is multiplied by `gamma`",
    "optim.gamma": "step schedule: the factor at each milestone",
    "eval.batch_size": "batch size of evaluation and collapse passes (no effect on results)",
    "run.out_dir": "parent folder of run directories",
    "run.checkpoint_every": "save `checkpoint.pt` every N epochs (and at the end)",
    "run.tensorboard": "write TensorBoard event files to `tb/` in the run directory",
    "allnc.hycon": "HyCon, the hybrid contrastive loss (sample against class means and samples)",
    "allnc.hycon_weight": "weight of HyCon",
    "allnc.hycon_temperature": "temperature of HyCon",
    "allnc.p2p": "P2P, the loss that aligns each class mean with its classifier row",
    "allnc.p2p_weight": "weight of P2P",
    "allnc.p2p_temperature": "temperature of P2P",
    "allnc.p2p_symmetric": "P2P in both directions (each mean finds its row, each row its mean)",
    "allnc.gbbn": "GBBN: a second, class-reversed batch whose loss weight grows as "
    "(epoch/epochs)^2 while the natural batch's falls (docs/allnc.md)",
    "allnc.mean_momentum": "momentum of the per-class memory of feature means",
}

HEADER = """\
# Configuration reference

<!-- Generated from src/ncollapse/config/schema.py by `python -m ncollapse.config.reference
--write docs/config.md` (make docs-config); a test fails when this page and the code differ.
Edit the comments in schema.py, not this page. -->

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
backbones, heads and losses are registries that grow when you register your own
([architecture](architecture.md#how-to-add)). Only `run.*` keys (where and how a run executes)
may differ when a run is resumed.
"""


def choices() -> dict[str, list[str]]:
    """The valid names of each key that selects something (the registries and fixed modes)."""
    from ..data import DATASETS, VAL_MODES
    from ..data.augment import AUGMENTS
    from ..data.longtail import PROFILES
    from ..engine.progress import PROGRESS_MODES
    from ..engine.schedule import SCHEDULES
    from ..heads import FEATURE_NORMS, HEADS
    from ..losses import BALANCE_MODES, LOSSES
    from ..models import BACKBONES

    return {
        "data.name": list(DATASETS),
        "data.profile": list(PROFILES),
        "data.augment": ["auto", *AUGMENTS],
        "data.val": list(VAL_MODES),
        "model.backbone": list(BACKBONES),
        "model.head": list(HEADS),
        "model.feature_norm": list(FEATURE_NORMS),
        "loss.name": list(LOSSES),
        "loss.balance": list(BALANCE_MODES),
        "optim.schedule": list(SCHEDULES),
        "run.progress": list(PROGRESS_MODES),
    }


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def field_comments() -> dict[str, dict[str, str]]:
    """For each config dataclass (by class name), each field's comment: the comment lines just
    above the field followed by the comment on its own line (a field may span several lines)."""
    source = inspect.getsource(schema)
    comments = _comments(source)
    lines = source.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above = []
            line = item.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            own = [comments[n] for n in range(item.lineno, item.end_lineno + 1) if n in comments]
            fields[item.target.id] = " ".join(part for part in [*above, *own] if part)
        out[node.name] = fields
    return out


def _type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.replace(" | ", " or ").replace("None", "null")


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


def _sections() -> list[tuple[str | None, type]]:
    """(key prefix, dataclass): the top-level fields first, then each section in order."""
    out: list[tuple[str | None, type]] = [(None, Config)]
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            out.append((f.name, f.default_factory))  # type: ignore[arg-type]
    return out


def config_reference() -> str:
    """The whole ``docs/config.md`` page, from the dataclasses in ``schema.py``."""
    from ..composition import compose

    comments = field_comments()
    defaults = config_to_dict(Config())
    no_recipe = config_to_dict(compose())
    options = choices()
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
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
                continue
            key = f.name if section is None else f"{section}.{f.name}"
            value, small = base[f.name], digits[f.name]
            meaning = comments.get(cls.__name__, {}).get(f.name, "") or DESCRIPTIONS.get(key, "")
            if key in options:
                listed = " | ".join(options[key])
                if meaning.replace(" ", "") == listed.replace(" ", ""):
                    meaning = ""  # the comment only lists the choices
                meaning = f"*choice*: {', '.join(options[key])}. {meaning}".strip()
            digit_cell = "" if small == value else f"`{_value(small)}`"
            if key == "name":  # set from the recipe's or the method's name
                digit_cell = ""
            parts.append(
                f"| `{key}` | {_cell(_type(f.type))} | `{_cell(_value(value))}` | "
                f"{_cell(digit_cell)} | {_cell(meaning)} |"
            )
    parts.append(_recipes())
    return "\n".join(parts) + "\n"


def _recipes() -> str:
    from .io import recipe_names
    from .methods import METHODS, method_preset

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
    from . import load_config
    from .io import config_to_dict, find_config

    base = config_to_dict(load_config(find_config("cifar10_lt")))
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
        prog="python -m ncollapse.config.reference",
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
                f"{args.check} is out of date: run python -m ncollapse.config.reference "
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
