"""The README's promises: its Python example runs, its set-up commands exist, and the recipes,
methods and config keys it names are real."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs_and_keeps_the_frame():
    """The five-line drop-in: it trains, and the ETF stays the seeded frame."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    head = namespace["model"][-1]
    assert namespace["predictions"].shape == (512,)
    assert not head.frame.requires_grad and "frame" in head.state_dict()
    from ncollapse import simplex_etf

    assert (head.frame == simplex_etf(128, 10)).all()  # training never moved the frame


def test_setup_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("compare", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_commands_name_existing_recipes_and_methods():
    from ncollapse.composition import compose
    from ncollapse.config import config_to_dict
    from ncollapse.methods import METHODS

    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    configs = re.findall(r"--config (\S+)", blocks)
    recipes = re.findall(r"--recipe (\S+)", blocks)
    methods = [m for group in re.findall(r"--methods? (\S+)", blocks) for m in group.split(",")]
    assert configs and recipes and methods
    for name in configs + recipes:
        compose(name)  # exists and loads
    assert set(methods) <= set(METHODS), set(methods) - set(METHODS)
    keys = re.findall(r"`(?:--set )?((?:model|loss|optim|data|eval|run)\.\w+)=", README)
    assert "model.head" in keys
    defaults = config_to_dict(compose())
    for key in keys:  # every config key the README names exists
        section, name = key.split(".")
        assert name in defaults[section], key
