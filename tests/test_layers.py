"""The package's import graph: each module imports only from its own layer and the layers below
(docs/architecture.md, "Layers"), and no modules import each other in a circle. Every import
counts: at the top of a file, inside a function, and for type checking only."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: the layers, bottom up, named as in docs/architecture.md: a module belongs to the layer that
#: names it or the package it is in (the longest match)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "errors",
        (
            "ncollapse",
            "ncollapse.errors",
            "ncollapse.registry",
            "ncollapse.folders",
            "ncollapse.jsonsafe",
        ),
    ),
    ("config", ("ncollapse.config",)),
    ("geometry", ("ncollapse.geometry",)),
    ("metrics", ("ncollapse.metrics",)),
    ("heads", ("ncollapse.heads",)),
    ("criterion", ("ncollapse.criterion",)),
    ("losses", ("ncollapse.losses",)),
    ("dropin", ("ncollapse.dropin", "ncollapse.integrations")),
    ("models", ("ncollapse.models",)),
    ("data", ("ncollapse.data",)),
    ("rundir", ("ncollapse.rundir", "ncollapse.collapse_file", "ncollapse.atomic")),
    ("ufm", ("ncollapse.ufm",)),
    ("threads", ("ncollapse.threads",)),
    ("engine", ("ncollapse.engine",)),
    ("methods", ("ncollapse.methods",)),
    (
        "composition",
        (
            "ncollapse.composition",
            "ncollapse.build",
            "ncollapse.runner",
            "ncollapse.evaluation",
            "ncollapse.inference",
            "ncollapse.provenance",
        ),
    ),
    ("reference", ("ncollapse.reference",)),
    ("sweep", ("ncollapse.sweep",)),
    ("report", ("ncollapse.report",)),
    ("cli", ("ncollapse.cli", "ncollapse.__main__")),
]


def modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package)."""
    out = {}
    for path in (SRC / "ncollapse").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a ``from x import name`` of a submodule
    counts as that submodule)."""
    mods = modules()

    def known(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for mod, (path, package) in mods.items():
        here = mod.split(".") if package else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                prefix = ".".join([*base, node.module] if node.module else base)
                targets = [
                    f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                    for a in node.names
                ]
            else:
                continue
            deps |= {known(t) for t in targets if t.split(".")[0] == "ncollapse"}
        graph[mod] = deps - {mod}
    return graph


def layer(module: str) -> int:
    best = None
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (i, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best[0]


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{mod} ({LAYERS[layer(mod)][0]}) imports {dep} ({LAYERS[layer(dep)][0]}, above)"
        for mod, deps in imports().items()
        for dep in sorted(deps)
        if layer(dep) > layer(mod)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = imports()
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        if mod in path:
            cycle = [*path[path.index(mod) :], mod]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if mod in done:
            return
        for dep in sorted(graph[mod]):
            visit(dep, [*path, mod])
        done.add(mod)

    for mod in sorted(graph):
        visit(mod, [])


def test_the_layer_table_of_the_docs_is_this_one():
    text = (SRC.parent / "docs" / "architecture.md").read_text()
    table = text.split("## Layers, bottom up", 1)[1].split("```", 2)[1]
    names = [line.split()[0] for line in table.splitlines() if line and not line.startswith(" ")]
    assert names == [name for name, _ in LAYERS], names


def test_the_configuration_names_no_component():
    """No loss, head or dataset is named in the config layer or the composition point: their
    names live in their registries."""
    import re

    pattern = re.compile(r'"(dr|allnc|ldam|la|bs|focal|etf|linear|cifar10|imagefolder)"')
    files = [*(SRC / "ncollapse" / "config").rglob("*.py"), SRC / "ncollapse" / "composition.py"]
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)
