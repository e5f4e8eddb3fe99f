"""tools/mutate.py, the project's own mutation check (docs/testing.md): its list stays in step
with the sources, and the machinery tells a killed mutation from a survivor without touching
the checkout. The full run (``python tools/mutate.py``) is not part of the test suite."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _tool():
    spec = importlib.util.spec_from_file_location("ncollapse_mutate", ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ncollapse_mutate"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutation_applies_to_the_sources_and_names_existing_tests():
    tool = _tool()
    assert len(tool.MUTATIONS) >= 30
    assert tool.check(tool.MUTATIONS) == []
    survivors = {"ema-lerp-weight", "mixup-boundary", "guard-parameters-only", "dr-absent-partner"}
    assert survivors <= {m.id for m in tool.MUTATIONS}  # issue 26's four survivors stay listed


def test_a_stale_mutation_is_named():
    tool = _tool()
    stale = tool.Mutation("x", "engine/ema.py", "no such text", "y", ("tests/test_cli.py",), "")
    assert tool.check([stale]) == ["x: its text occurs 0 times in engine/ema.py, not once"]
    with pytest.raises(ValueError, match="occurs 0 times"):
        tool.apply(stale, ROOT)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((root / "src" / "ncollapse").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_a_mutation_is_killed_in_a_copy_and_the_checkout_is_untouched(tmp_path):
    tool = _tool()
    before = _digest(ROOT)
    tree = tool.copy_tree(tmp_path / "tree")
    m = next(m for m in tool.MUTATIONS if m.id == "dr-no-half")
    _, verdict, _, _ = tool.mutate_one(m, tree, timeout=300)
    assert verdict == "killed"
    assert _digest(tree) == before == _digest(ROOT)  # put back in the copy, never applied here
    harmless = tool.Mutation(
        "comment", m.path, m.old, m.old + "  # same code", m.tests, "a change no test can see"
    )
    assert tool.mutate_one(harmless, tree, timeout=300)[1] == "SURVIVED"
