"""Every Python block of README.md and docs/*.md runs, on a CPU, as written (with sybil).

The blocks of one page run in order in one namespace (a page may build on its earlier blocks),
in a temporary folder, with one CPU thread. A block that cannot run here says so just before
it, with its reason: ``<!-- skip: next "needs the CIFAR-10 files" -->``. Registries that a page
extends (a loss registered in an example) are restored afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path
from unittest import SkipTest

import pytest

sybil = pytest.importorskip(
    "sybil", reason="the docs' examples need sybil (pip install -e '.[dev]')"
)
from sybil import Sybil  # noqa: E402
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*skip:\s*(\w+)(.*?)-->")


def _registries() -> list:
    from ncollapse.composition import REGISTRIES
    from ncollapse.methods import METHODS

    return [METHODS, *REGISTRIES]


def _document(page: Path):
    parser = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()], path=str(page.parent))
    return parser.parse(page)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    text = page.read_text()
    if "```python" not in text:
        pytest.skip("no Python block")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved = [(r, set(r.names())) for r in _registries()]
    ran = skipped = 0
    try:
        for example in _document(page):
            try:
                example.evaluate()
            except SkipTest:
                skipped += 1
                continue
            ran += 1
    finally:
        for registry, names in saved:  # what an example registered goes, with its config keys
            for name in set(registry.names()) - names:
                registry.unregister(name)
        torch.set_num_threads(threads)
    assert ran + skipped > 0


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_skip_gives_a_reason(page):
    """A skipped block says why (``skip: next "reason"``), and only Python blocks are skipped."""
    text = page.read_text()
    for match in SKIP.finditer(text):
        action, reason = match.group(1), match.group(2).strip()
        assert action == "next", f"{page.name}: use 'skip: next \"reason\"', one block at a time"
        assert re.fullmatch(r'"[^"]{8,}"', reason), (
            f"{page.name}: the skip at offset {match.start()} needs a reason in double quotes"
        )
        following = text[match.end() :].lstrip()
        assert following.startswith("```python"), f"{page.name}: a skip must precede a Python block"
