"""docs/config.md is generated from the declarations of the config keys and cannot drift from
them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "config.md"


def test_committed_page_matches_the_code():
    # a fresh process: registries extended by other tests must not leak into the page
    proc = subprocess.run(
        [sys.executable, "-m", "ncollapse.reference", "--check", str(PAGE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stderr + (
        "\nregenerate with: make docs-config (python -m ncollapse.reference --write docs/config.md)"
    )


def _keys() -> list[str]:
    import ncollapse.composition  # noqa: F401  (every component declares its keys)
    from ncollapse.config import Config
    from ncollapse.config.section import is_section

    return [key for key, opt in Config.walk() if not is_section(opt.type)]


def test_every_key_is_on_the_page_with_a_meaning():
    text = PAGE.read_text()
    for key in _keys():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} is missing from docs/config.md"
        meaning = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert meaning, f"{key} has no meaning: give its option(...) a doc"


def test_the_page_shows_the_command_line_defaults_without_a_recipe():
    text = PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `model.backbone` |"))
    assert "`resnet32`" in row and "`digits_cnn`" in row  # default and the no-recipe value


def test_a_key_declared_by_a_component_names_it():
    text = PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `loss.tau` |"))
    assert "*for* loss.name=la." in row
    row = next(line for line in text.splitlines() if line.startswith("| `loss.name` |"))
    assert "*choice*: " in row and "`dr`" in row  # the registry's names and its default
