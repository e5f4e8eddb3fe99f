"""Everything the README and the docs name exists: files, links, Python names, commands, config
keys, recipes and method presets; and they cite no file the project does not ship."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]

CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(
    r"(?<![\w./-])((?:src|tests|docs|benchmarks|configs|\.ci)/[\w./*-]+|[\w-]+\.(?:md|cff)|Makefile|LICENSE)\b"
)
CALL = re.compile(r"(?<![\w.])([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\(")
CONFIG_KEY = re.compile(r"^(?:--set )?(data|model|loss|optim|eval|run|allnc)\.(\w+)(?:=.*)?$")

#: names in calls that belong to other libraries or to the examples themselves
FOREIGN = {"torch", "np", "numpy", "nn", "F", "os", "math", "plt", "json", "yaml", "Path"}
#: other libraries' names written without their module
ALLOWED_CALLS = {"BatchNorm1d", "WeightedRandomSampler", "DataLoader", "TensorDataset"}
#: file extensions that look like config keys (`data.json`, `model.pt`)
EXTENSIONS = {"json", "jsonl", "pt", "pt2", "md", "yaml", "npz", "py", "csv", "png", "txt"}
#: files that exist only in a run directory, a user's folder or a sibling checkout
NOT_IN_REPO = re.compile(
    r"^(config\.yaml|data\.json|env\.json|metrics\.jsonl|summary\.json|checkpoint\.pt|model\.pt|"
    r"collapse_final\.npz|model\.pt2|analysis\.md|features_analysis\.md|results\.md|results\.csv|sweep\.json)$"
)


def _text(page: Path) -> str:
    return page.read_text()


def _prose(page: Path) -> str:
    """The page without its code blocks: fenced ones (run by test_docs_examples) and indented
    ones (command lines and outlines)."""
    text = FENCE.sub("", _text(page))
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def _spans(page: Path) -> list[str]:
    return CODE_SPAN.findall(_prose(page))


@cache
def _public_names() -> frozenset[str]:
    """Every module, function, class, method and attribute name defined in ncollapse."""
    import ncollapse

    names: set[str] = set(ncollapse.__all__)
    for info in pkgutil.walk_packages(ncollapse.__path__, "ncollapse."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        names.add(info.name.rsplit(".", 1)[-1])
        for name, obj in vars(module).items():
            names.add(name)
            if inspect.isclass(obj) and obj.__module__.startswith("ncollapse"):
                names.update(vars(obj))
                for field in getattr(obj, "__dataclass_fields__", {}):
                    names.add(field)
    return frozenset(names)


def _resolve(dotted: str) -> object:
    """Import ``ncollapse.a.b.c`` as far as modules go, then follow attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_no_file_the_project_does_not_ship(page):
    text = _text(page)
    for word in ("SPEC", "DESIGN.md", "shared/SPEC", "loader_outputs"):
        assert not re.search(rf"\b{re.escape(word)}\b", text), f"{page.name} cites {word}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_named_files_exist(page):
    missing = []
    for span in _spans(page):
        for path in PATH.findall(span):
            if NOT_IN_REPO.match(path) or path.startswith(("runs/", "docs/_")):
                continue
            if "*" in path or "{" in span:
                if not list(ROOT.glob(path.split("{")[0].rstrip("/") or ".")):
                    missing.append(path)
                continue
            candidates = [ROOT / path, page.parent / path]
            if not any(c.exists() for c in candidates):
                missing.append(path)
    assert not missing, f"{page.name} names files that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_named_python_names_exist(page):
    known = _public_names()
    missing = []
    for span in _spans(page):
        for dotted in re.findall(r"\bncollapse(?:\.[A-Za-z_]\w*)+", span):
            if dotted.endswith((".md", ".yaml")):
                continue
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(dotted)
        for dotted in CALL.findall(span):
            head, last = dotted.split(".")[0], dotted.split(".")[-1]
            if dotted.startswith("ncollapse") or head in FOREIGN or hasattr(builtins, last):
                continue
            # one-word lower-case calls are mostly formulas (`cos(a, b)`, `tr(S)`, `sqrt(x)`);
            # check the names of functions (snake_case) and classes (CamelCase)
            if last in ALLOWED_CALLS or not (
                "_" in last.strip("_") or re.search(r"[a-z][A-Z]", last)
            ):
                continue
            if last not in known:
                missing.append(dotted)
    assert not missing, (
        f"{page.name} names Python objects that do not exist: {sorted(set(missing))}"
    )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_named_commands_options_and_keys_exist(page):
    from ncollapse.cli import build_parser
    from ncollapse.composition import compose
    from ncollapse.config import config_to_dict, recipe_names
    from ncollapse.methods import METHODS

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    defaults = config_to_dict(compose())
    text = _prose(page)
    problems = []
    for command in re.findall(r"`ncollapse ([a-z]\w*)", text):
        if command not in commands:
            problems.append(f"command {command}")
    for span in _spans(page):
        m = CONFIG_KEY.match(span)
        if m and m.group(2) not in EXTENSIONS and m.group(2) not in defaults[m.group(1)]:
            problems.append(f"config key {span}")
        for name in re.findall(r"--(?:config|recipe) ([a-z0-9_]+)\b", span):
            if name not in recipe_names():
                problems.append(f"recipe {name}")
        for group in re.findall(r"--methods? ([a-z0-9_,]+)\b", span):
            problems += [
                f"method {m}" for m in group.split(",") if m not in METHODS and m != "name"
            ]
    assert not problems, f"{page.name}: {problems}"
