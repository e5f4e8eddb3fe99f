"""The Python examples of docs/metrics.md run as written (on a CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_have_examples_and_no_internal_references():
    text = DOC.read_text()
    assert len(BLOCKS) >= 2
    for word in ("SPEC", "DESIGN", "loader_outputs", ".cuda()", 'device="cuda"'):
        assert word not in text, word


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"docs/metrics.md block {index}", "exec"), {"__name__": "__doc__"})
    assert capsys.readouterr().out.strip()  # each example prints its result
