"""Property test of the features reader: whatever lands in a features file, reading it either
gives arrays the metrics accept or one UserError; never another exception, never a long wait."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from ncollapse.errors import UserError
from ncollapse.metrics import collapse_metrics
from ncollapse.report.features import read_features

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import HealthCheck, given, settings  # noqa: E402

DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint8", "bool", "complex64", "U3"]


@st.composite
def arrays(draw, max_dim: int = 3):
    ndim = draw(st.integers(0, max_dim))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    n = int(np.prod(shape))
    if dtype == "U3":
        texts = draw(st.lists(st.text(max_size=3), min_size=n, max_size=n))
        return np.array(texts, dtype="U3").reshape(shape)
    values = draw(
        st.lists(
            st.one_of(
                st.integers(-3, 8),
                st.floats(allow_nan=True, allow_infinity=True, width=32),
                st.sampled_from([10**9, 2**62, -(2**40)]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    with np.errstate(all="ignore"):
        try:
            return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
        except (OverflowError, ValueError):
            return np.zeros(shape, dtype=dtype)


@st.composite
def feature_files(draw):
    """Bytes of a features file: mostly well-formed archives with one or two things wrong
    (or nothing), sometimes a lone .npy, an object array, random bytes or a cut-off file."""
    kind = draw(st.sampled_from(["npz"] * 6 + ["npy", "bytes", "object"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    buf = io.BytesIO()
    if kind == "npy":
        np.save(buf, draw(arrays()))
        return buf.getvalue()
    n, d, k = draw(st.integers(1, 12)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    values = draw(st.lists(st.floats(-5, 5), min_size=n * d, max_size=n * d))
    contents = {
        "features": np.asarray(values, dtype=np.float64).reshape(n, d),
        "labels": np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))),
    }
    if draw(st.booleans()):
        contents["classifier"] = np.ones((k, d))
        if draw(st.booleans()):
            contents["bias"] = np.zeros(k)
    for key in ("features", "labels", "classifier", "bias"):  # replace some by anything
        if draw(st.integers(0, 4)) == 0:
            contents[key] = draw(arrays())
    if kind == "object":
        obj = np.empty(n, dtype=object)
        obj[:] = [[1.0]] * n
        contents[draw(st.sampled_from(["features", "labels"]))] = obj
    for key in list(contents):
        if draw(st.integers(0, 12)) == 0:
            contents[key + "_other"] = contents.pop(key)
    np.savez(buf, **contents)
    data = buf.getvalue()
    if draw(st.integers(0, 8)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=feature_files())
def test_reader_accepts_or_refuses_in_one_sentence(tmp_path, data):
    path = tmp_path / "f.npz"
    path.write_bytes(data)
    t0 = time.perf_counter()
    try:
        fa = read_features(path)
    except UserError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
    else:
        n, d = fa.features.shape
        assert n > 0 and d > 0 and fa.labels.shape == (n,)
        assert np.isfinite(fa.features).all() and fa.labels.min() >= 0
        assert fa.labels.max() < fa.num_classes <= 10_000
        out = collapse_metrics(fa.features, fa.labels, classifier=fa.classifier, bias=fa.bias,
                               num_classes=fa.num_classes)  # fmt: skip
        assert out["num_samples"] == n
    assert time.perf_counter() - t0 < 5
