"""docs/config.md is generated from the config dataclasses and cannot drift from them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "config.md"


def test_committed_page_matches_the_code():
    # a fresh process: registries extended by other tests must not leak into the page
    proc = subprocess.run(
        [sys.executable, "-m", "ncollapse.config.reference", "--check", str(PAGE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stderr + (
        "\nregenerate with: make docs-config (python -m ncollapse.config.reference --write "
        "docs/config.md)"
    )


def _keys() -> list[str]:
    from ncollapse.config import Config

    out = []
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory())]
        else:
            out.append(f.name)
    return out


def test_every_key_is_on_the_page_with_a_meaning():
    text = PAGE.read_text()
    for key in _keys():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} is missing from docs/config.md"
        meaning = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert meaning, f"{key} has no meaning: add a comment in config/schema.py"


def test_fallback_descriptions_name_real_keys_without_a_comment():
    from ncollapse.config.reference import DESCRIPTIONS, field_comments
    from ncollapse.config.schema import Config

    comments = field_comments()
    keys = set(_keys())
    sections = {
        f.name: f.default_factory.__name__
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None)
    }
    for key in DESCRIPTIONS:
        assert key in keys, f"DESCRIPTIONS names {key}, which is no config key"
        section, _, name = key.rpartition(".")
        cls = sections[section] if section else "Config"
        assert not comments.get(cls, {}).get(name), (
            f"{key} now has a comment in schema.py: remove it from reference.DESCRIPTIONS"
        )


def test_the_page_shows_the_command_line_defaults_without_a_recipe():
    text = PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `model.backbone` |"))
    assert "`resnet32`" in row and "`digits_cnn`" in row  # default and the no-recipe value
