"""Property tests of the config loader (issue 13): whatever lands in a ``--set`` or a recipe file,
:func:`ncollapse.composition.compose` either gives a config a run can use or one
:class:`~ncollapse.errors.UserError`; never another exception. On the command line that is
exit 0 or one ``ncollapse: error:`` line with exit 2."""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from pathlib import Path

import pytest
import yaml

from ncollapse.cli import main
from ncollapse.composition import SEED_MAX, compose
from ncollapse.config import Config, all_keys, config_to_dict
from ncollapse.errors import UserError

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import HealthCheck, given, settings  # noqa: E402

KEYS = [k for k in all_keys(Config) if k != "name"]
NASTY = [
    "nan", ".nan", "inf", "-inf", ".inf", "1e400", "-0", "0", "-1", "1", "0.5", "2", "1e-300",
    str(2**64), str(-(2**63)), "null", "~", "", "true", "no", "[]", "{}", "[1, 2]", "[[1]]",
    "{a: 1}", "''", "'x'", "[", "{", "]", ": x", "!!python/object:os.system {}", "&a [*a]",
    "!!binary aGk=", "2001-12-14", "0x10", "0o7", "1_000", "'1'", "\t", "é", "\x00", "a=b",
]  # fmt: skip

values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
known = st.sampled_from(KEYS)
keys = st.one_of(known, known, known, st.text(max_size=12), st.sampled_from(["a.b", ".", "optim."]))


def _usable(cfg: Config) -> None:
    """What an accepted config promises: finite numbers, seeds in range."""

    def walk(values, prefix=""):
        for name, v in values.items():
            if isinstance(v, dict):
                walk(v, prefix + name + ".")
            elif isinstance(v, float):
                assert math.isfinite(v), prefix + name
            elif isinstance(v, list):
                assert all(math.isfinite(x) for x in v if isinstance(x, float)), prefix + name

    walk(cfg.to_dict())
    for seed in (cfg.seed, cfg.data.subset_seed, cfg.data.val_seed, cfg.model.etf_seed):
        assert 0 <= seed <= SEED_MAX
    assert cfg.optim.lr > 0 and cfg.optim.epochs >= 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=2))
def test_set_overrides_give_a_usable_config_or_a_user_error(pairs):
    try:
        cfg = compose(overrides=[f"{k}={v}" for k, v in pairs])
    except UserError:
        return
    _usable(cfg)


@st.composite
def recipe_docs(draw):
    """A recipe document: known sections and keys with nasty values, unknown keys, odd shapes."""
    doc: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        raw = draw(st.sampled_from(NASTY))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        *sections, leaf = key.split(".")
        cur = doc
        for s in sections:
            cur = cur.setdefault(s, {}) if isinstance(cur.get(s, {}), dict) else {}
        cur[leaf] = value
    extra = draw(st.sampled_from([{}, {"extends": "nowhere.yaml"}, {"method": 3}, {"optim": 3},
                                  {"method": "etf_dr"}, {"bogus": 1}, {"extends": "."}]))  # fmt: skip
    return {**doc, **extra}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(recipe_docs().map(lambda d: yaml.safe_dump(d).encode()), st.binary(max_size=64)))
def test_recipe_files_give_a_usable_config_or_a_user_error(content):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recipe.yaml"
        path.write_bytes(content)
        try:
            cfg = compose(path)
        except UserError:
            return
    _usable(cfg)
    assert compose(base=config_to_dict(cfg)) == cfg  # what a run saves composes back the same


@settings(max_examples=60, deadline=None)
@given(keys, values)
def test_the_command_line_answers_in_one_line(key, value):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["train", "--print-config", "--set", f"{key}={value}"])
        except SystemExit as exc:
            rc = exc.code
    lines = err.getvalue().strip().splitlines()
    if rc == 0:
        assert yaml.safe_load(out.getvalue())["optim"]["lr"] > 0
    else:
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("ncollapse: error:"), lines
