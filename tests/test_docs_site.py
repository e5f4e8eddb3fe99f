"""The documentation site and the files a package is expected to have: the nav covers every
page, the licence is MIT, the citation names the software and the three papers at the package's
version, the changelog states the versioning policy, and a wheel ships py.typed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _mkdocs() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold !!python/name tags; none are needed to read the nav
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_nav_or_listed_as_not_in_it():
    cfg = _mkdocs()
    listed = set(_nav_pages(cfg["nav"]))
    pending = {line.strip().lstrip("/") for line in cfg.get("not_in_nav", "").splitlines()}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= listed | pending, f"add to mkdocs.yml's nav: {sorted(pages - listed - pending)}"
    assert listed <= pages, f"the nav names missing pages: {sorted(listed - pages)}"
    assert cfg.get("strict") is True


def test_licence_is_mit_as_pyproject_says():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_citation_names_software_and_papers_at_the_package_version():
    import ncollapse

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == ncollapse.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(ncollapse.__version__)}"', pyproject, re.M)
    titles = " ".join(ref["title"] for ref in cff["references"])
    for words in (
        "Do We Really Need a Learnable Classifier",
        "All-around Neural Collapse",
        "Unconstrained Feature Model",
        "Prevalence of Neural Collapse",
    ):
        assert words in titles, words


def test_changelog_states_the_versioning_policy():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Versioning policy" in text and "## [Unreleased]" in text


@pytest.mark.slow
def test_wheel_ships_py_typed_and_the_recipes(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-200:]}")
    wheel = next(tmp_path.glob("ncollapse-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ncollapse/py.typed" in names
    assert any(n.startswith("ncollapse/configs/") and n.endswith(".yaml") for n in names)
