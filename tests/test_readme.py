"""The README's promises: its Python example runs, and its set-up commands exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs_and_keeps_the_frame():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    head = namespace["head"]
    assert namespace["predictions"].shape == (32,)
    assert not head.frame.requires_grad
    from ncollapse import simplex_etf

    assert (head.frame == simplex_etf(128, 10)).all()  # training never moved the frame


def test_setup_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("compare", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
