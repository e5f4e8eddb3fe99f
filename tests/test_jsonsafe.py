"""Strict JSON out of every writer: NaN and infinities as null, arrays and tensors as lists."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ncollapse.cli import main
from ncollapse.jsonsafe import dumps, jsonable
from ncollapse.rundir import Run, read_metrics


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as jq and JavaScript do."""

    def refuse(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null():
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "x": 1.5,
             "np": np.float32("nan"), "t": torch.tensor([1.0, float("inf")])}  # fmt: skip
    assert strict_loads(dumps(value)) == {"nan": None, "inf": None, "-inf": None, "x": 1.5,
                                          "np": None, "t": [1.0, None]}  # fmt: skip


def test_arrays_scalars_tuples_and_keys():
    value = {1: (np.int64(2), np.bool_(True)), "a": np.arange(3).reshape(3, 1),
             "s": torch.tensor(3.5), "text": "nan", "none": None}  # fmt: skip
    out = jsonable(value)
    assert out == {"1": [2, True], "a": [[0], [1], [2]], "s": 3.5, "text": "nan", "none": None}
    assert type(out["1"][0]) is int and type(out["1"][1]) is bool


def test_other_objects_left_to_default():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    with pytest.raises(TypeError):
        dumps({"x": Thing()})
    assert strict_loads(dumps({"x": Thing()}, default=str)) == {"x": "thing"}


def test_run_files_are_strict_json(tmp_path):
    run = Run.create(tmp_path, "r", explicit=True)
    run.append_metrics({"epoch": 1, "kind": "eval", "nc1": math.nan, "acc": np.float64(0.5)})
    run.write_summary({"final": {"loss": math.inf}, "counts": np.array([3, 1])})
    assert read_metrics(run.metrics_path) == [{"epoch": 1, "kind": "eval", "nc1": None,
                                               "acc": 0.5}]  # fmt: skip
    strict_loads(run.metrics_path.read_text())
    assert strict_loads(run.summary_path.read_text()) == {"final": {"loss": None},
                                                          "counts": [3, 1]}  # fmt: skip


def test_ufm_json_with_an_undefined_distance_is_strict(capsys):
    # so strong a regulariser that every logit is 0: the distance to the ETF is undefined (NaN),
    # printed as null where Python's json would print the invalid token NaN
    rc = main(["ufm", "samples", "--nb", "10", "--lam", "1000", "--scaling", "mean", "--json"])
    out = capsys.readouterr().out
    row = strict_loads(out)["rows"][0]
    assert rc == 0 and row["logit_norm"] == 0.0
    assert row["etf_distance"] is None and row["etf_error"] is None
