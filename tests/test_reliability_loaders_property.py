"""Property tests of the loaders (issue 26): whatever bytes sit in a list file, an image folder,
the IDX files of MNIST, the pickles of a CIFAR folder, a sweep record or the files of a run
directory, ncollapse answers with a usable result or one :class:`~ncollapse.errors.UserError`
(on the command line: exit 2 and one ``ncollapse: error:`` line), never another exception and
never a hang (every example runs under an alarm). ``tests/test_reliability_property.py`` does
the same for config values and recipe files.

What "usable" means is checked too: a bundle whose every class has a training image (at least
two classes), labels inside the class list, images of the declared shape.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import pickle
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ncollapse import rundir
from ncollapse.cli import main
from ncollapse.composition import compose
from ncollapse.data import load_data
from ncollapse.errors import UserError

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Hang(Exception):
    pass


@contextlib.contextmanager
def within(seconds: int):
    """Raise :class:`Hang` when the block runs longer than ``seconds``."""

    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _load(overrides: list[str], seconds: int = 30):
    """``load_data`` of the composed config: the bundle, or None after a UserError."""
    with within(seconds):
        try:
            cfg = compose(overrides=overrides)
            bundle = load_data(cfg.data)
        except UserError:
            event("refused")
            return None
    event("loaded")
    return bundle


def _usable(bundle) -> None:
    counts = list(bundle.class_counts)
    assert len(counts) == len(bundle.classes) >= 2 and min(counts) >= 1, counts
    for split in (bundle.train, bundle.test):
        labels = split.labels
        assert int(labels.min()) >= 0 and int(labels.max()) < len(bundle.classes)


def _cli(argv: list[str], seconds: int = 60) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with within(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def _one_line_or_success(rc: int, err: str) -> None:
    event(f"exit {rc}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 0:
        assert not any(ln.startswith("ncollapse: error") for ln in lines), lines
        return
    errors = [ln for ln in lines if not ln.startswith("ncollapse: warning:")]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("ncollapse: error:"), lines


# ---------------------------------------------------------------------- list files

_IMAGES = 4


def _png_folder(root: Path) -> None:
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(_IMAGES):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            root / "img" / f"{i}.png"
        )


labels = st.one_of(
    st.integers(0, 3).map(str),
    st.sampled_from(["-1", "10", "99999999999", "1" * 40, "1.5", "", "x", "\u0661", "²", "0x1"]),
)
paths = st.one_of(
    st.integers(0, _IMAGES - 1).map(lambda i: f"img/{i}.png"),
    st.sampled_from(["img/none.png", "/etc/hostname", "../x.png", "img", "a b.png", "#c"]),
)
lines = st.one_of(
    st.tuples(paths, labels).map(" ".join),
    st.text(max_size=20),
    st.sampled_from(["", "   ", "# comment", "\t3"]),
)


@st.composite
def well_formed_list(draw):
    """Lines of images 0..3 with labels 0..3 (two classes at least), with a few of the lines
    above mixed in at random places."""
    k = draw(st.integers(2, 4))
    good = [f"img/{i % _IMAGES}.png {i % k}" for i in range(draw(st.integers(k, 8)))]
    for _ in range(draw(st.integers(0, 2))):
        good.insert(draw(st.integers(0, len(good))), draw(lines))
    end = draw(st.sampled_from(["\n", "\r\n", ""]))
    return (end or "\n").join(good).encode() + end.encode()


list_file = st.one_of(
    well_formed_list(),
    well_formed_list(),
    st.lists(lines, max_size=8).map(lambda ls: "\n".join(ls).encode()),
    st.binary(max_size=80),
    st.lists(lines, max_size=4).map(lambda ls: "\n".join(ls).encode("utf-16")),
)


@settings(max_examples=120, **SETTINGS)
@given(train=list_file, test=list_file)
def test_list_files_give_a_usable_bundle_or_a_user_error(train, test):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _png_folder(root)
        (root / "train.txt").write_bytes(train)
        (root / "test.txt").write_bytes(test)
        over = ["data.name=listfile", f"data.root={root}", "data.size=8"]
        over += ["data.train_list=train.txt", "data.test_list=test.txt"]
        bundle = _load(over)
        if bundle is not None:
            _usable(bundle)


# ---------------------------------------------------------------------- image folders


def _image_bytes(kind: str) -> bytes:
    from PIL import Image

    if kind in ("png", "gray", "jpg", "tiny"):
        mode, size = {"gray": ("L", 6), "tiny": ("RGB", 1)}.get(kind, ("RGB", 6))
        buf = io.BytesIO()
        Image.new(mode, (size, size), 120).save(buf, "JPEG" if kind == "jpg" else "PNG")
        return buf.getvalue()
    return {"empty": b"", "text": b"not an image", "cut": b"\x89PNG\r\n\x1a\n\0\0"}[kind]


entry = st.tuples(
    st.sampled_from(["train", "test", "val", "x"]),
    st.sampled_from(["a", "b", "c", "ü", ".hidden"]),
    st.sampled_from(["0.png", "1.png", "2.jpg", "3.txt", "sub/4.png", ".5.png"]),
    st.sampled_from(["png", "png", "gray", "jpg", "tiny", "empty", "text", "cut"]),
)
#: train and test of classes a and b, two good images each: what the random entries change
BASE = [(s, c, f"{i}.png", "png") for s in ("train", "test") for c in "ab" for i in (7, 8)]
entries = st.one_of(
    st.lists(entry, max_size=3).map(lambda extra: BASE + extra),
    st.lists(entry, max_size=14),
)


@settings(max_examples=80, **SETTINGS)
@given(files=entries, imbalance=st.sampled_from(["1", "0.5", "0.01"]))
def test_image_folders_give_a_usable_bundle_or_a_user_error(files, imbalance):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "img"
        root.mkdir()
        for split, cls, name, kind in files:
            p = root / split / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_image_bytes(kind))
        over = ["data.name=imagefolder", f"data.root={root}", f"data.imbalance={imbalance}"]
        over += [f"data.cache_dir={Path(d) / 'cache'}"]
        bundle = _load(over)
        if bundle is not None:
            _usable(bundle)


# ---------------------------------------------------------------------- MNIST's IDX files

IDX = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@st.composite
def idx_files(draw):
    """The four files: well-formed small IDX (10-40 train, 1-20 test images of 4 x 4), or
    some with a header or body changed, or random bytes; some gzipped."""
    n = {"train": draw(st.integers(10, 40)), "test": draw(st.integers(1, 20))}
    out = {}
    intact = draw(st.booleans())  # half the folders well-formed throughout
    for role, name in IDX.items():
        split, kind = role.split("_")
        shape = (n[split], 4, 4) if kind == "x" else (n[split],)
        body = (
            np.arange(int(np.prod(shape))) % 10 if kind == "y" else np.zeros(int(np.prod(shape)))
        ).astype(np.uint8)
        header = bytearray(b"\0\0\x08" + bytes([len(shape)]))
        header += b"".join(int(v).to_bytes(4, "big") for v in shape)
        data = bytes(header) + body.tobytes()
        how = (
            "ok"
            if intact
            else draw(st.sampled_from(["ok", "cut", "dims", "type", "random", "label"]))
        )
        if how == "cut":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif how == "dims":
            pos = 4 + 4 * draw(st.integers(0, len(shape) - 1))
            value = draw(st.sampled_from([0, 1, -1, 2**31 - 1, 65536, 3]))
            data = data[:pos] + value.to_bytes(4, "big", signed=True) + data[pos + 4 :]
        elif how == "type":
            data = data[:2] + bytes([draw(st.integers(0, 255))]) + data[3:]
        elif how == "random":
            data = draw(st.binary(max_size=64))
        elif how == "label" and kind == "y":
            data = data[:-1] + bytes([draw(st.integers(10, 255))])
        if draw(st.booleans()):
            out[name + ".gz"] = gzip.compress(data)
        else:
            out[name] = data
    return out


@settings(max_examples=80, **SETTINGS)
@given(files=idx_files(), imbalance=st.sampled_from(["1", "0.5"]))
def test_idx_files_give_a_usable_bundle_or_a_user_error(files, imbalance):
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        bundle = _load(["data.name=mnist", f"data.root={d}", f"data.imbalance={imbalance}"])
        if bundle is not None:
            _usable(bundle)


# ---------------------------------------------------------------------- CIFAR pickles

CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def _cifar_file(name: str, i: int, how: str, detail: object, n: int = 20) -> bytes:
    """One file of a ``cifar-10-batches-py`` folder: well-formed (``n`` images, every class
    once before any twice), or with a key, the data's shape, the labels (or names) or the
    whole object changed, or not a pickle."""
    if name == "batches.meta":
        good: dict = {b"label_names": [f"c{c}".encode() for c in range(10)]}
    else:
        good = {b"data": np.full((n, 3072), i, np.uint8), b"labels": [j % 10 for j in range(n)]}
    obj: object = good
    if how == "key":
        obj = {b"nothing": 1}
    elif how == "shape" and name != "batches.meta":
        obj = {**good, b"data": np.zeros(detail)}
    elif how == "labels":
        obj = {**good, (b"label_names" if name == "batches.meta" else b"labels"): detail}
    elif how == "other":
        obj = detail
    elif how == "random":
        return bytes(detail)
    try:
        return pickle.dumps(obj, protocol=2)
    except (pickle.PicklingError, TypeError, AttributeError):
        return b"\x80\x02" + repr(obj).encode()


@st.composite
def cifar_plans(draw):
    """What each file of the folder holds (see :func:`_cifar_file`): small descriptions, so
    that a failing example prints in a few lines."""
    plan = {}
    intact = draw(st.booleans())  # half the folders well-formed throughout
    for name in [*CIFAR_FILES, "batches.meta"]:
        how = (
            "ok"
            if intact
            else draw(st.sampled_from(["ok", "key", "shape", "labels", "other", "random"]))
        )
        detail = {
            "shape": st.sampled_from([(20, 30), (5, 3072), (0,), (20, 3072, 1)]),
            "labels": st.sampled_from(
                [[-1] * 20, [3] * 20, "ab", 7, [b"x"] * 20, [10] * 20, [1.5] * 20, [None] * 20]
            ),
            "other": st.sampled_from([[1, 2], "text", None, {"data": "x"}, print, {b"data": "x"}]),
            "random": st.binary(max_size=40),
        }.get(how, st.none())
        plan[name] = (how, draw(detail), draw(st.integers(10, 30)))
    return plan


@settings(max_examples=80, **SETTINGS)
@given(plan=cifar_plans(), imbalance=st.sampled_from(["1", "0.5", "0.01"]))
def test_cifar_pickles_give_a_usable_bundle_or_a_user_error(plan, imbalance):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "cifar-10-batches-py"
        folder.mkdir()
        for i, (name, (how, detail, n)) in enumerate(plan.items()):
            (folder / name).write_bytes(_cifar_file(name, i, how, detail, n))
        bundle = _load(["data.name=cifar10", f"data.root={d}", f"data.imbalance={imbalance}"])
        if bundle is not None:
            _usable(bundle)
            assert tuple(bundle.train.images.shape[1:]) == (3, 32, 32)


# ---------------------------------------------------------------------- run directories

RUN_FILES = [getattr(rundir, n) for n in dir(rundir) if n.endswith("_FILE")]  # config.yaml, ...


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run (digits, 1 epoch), copied for each example."""
    out = tmp_path_factory.mktemp("runs")
    quiet = ["--set", "run.progress=none", "--set", "run.tensorboard=false"]
    rc, _, err = _cli(["train", "--epochs", "1", "--out", str(out), "--name", "r", *quiet], 120)
    assert rc == 0, err
    return out / "r"


@st.composite
def damage(draw):
    """One to three files of the run replaced by random bytes, a prefix of themselves, another
    JSON or YAML value, or removed."""
    out = []
    for name in draw(st.lists(st.sampled_from(RUN_FILES), min_size=1, max_size=3, unique=True)):
        how = draw(st.sampled_from(["bytes", "prefix", "value", "remove", "empty"]))
        value = None
        if how == "bytes":
            value = draw(st.binary(max_size=100))
        elif how == "prefix":
            value = draw(st.floats(0, 1))
        elif how == "value":
            value = json.dumps(
                draw(
                    st.one_of(
                        st.dictionaries(st.sampled_from(["optim", "data", "epoch", "kind"]),
                                        st.one_of(st.integers(), st.text(max_size=4),
                                                  st.none(), st.lists(st.integers(), max_size=2))),
                        st.lists(st.integers(), max_size=3), st.integers(), st.none(),
                    )
                )
            ).encode()  # fmt: skip
        out.append((name, how, value))
    return out


def _damaged(run: Path, dest: Path, changes) -> Path:
    shutil.copytree(run, dest)
    for name, how, value in changes:
        p = dest / name
        if how == "remove":
            p.unlink()
        elif how == "empty":
            p.write_bytes(b"")
        elif how == "prefix":
            data = p.read_bytes()
            p.write_bytes(data[: int(len(data) * value)])
        else:
            p.write_bytes(value)
    return dest


def _no_training(monkeypatch):
    """A resume that gets as far as training stops there (accepted): what is judged is how
    the run's files were read."""
    from ncollapse.engine.loop import Trainer

    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: _raise(_Accepted()))


class _Accepted(Exception):
    pass


def _raise(exc):
    raise exc


@settings(max_examples=40, **SETTINGS)
@given(changes=damage(), command=st.sampled_from(["resume", "analyze", "evaluate", "collect"]))
# found by this test: a config.yaml without its sections ({}) made `evaluate` raise KeyError
@example(changes=[("config.yaml", "value", b"{}"), ("checkpoint.pt", "bytes", b"")],
         command="evaluate")  # fmt: skip
# and a metrics.jsonl record with "epoch": "" made a resume raise ValueError
@example(changes=[("checkpoint.pt", "remove", None),
                  ("metrics.jsonl", "value", b'{"optim": null, "data": null, "epoch": ""}')],
         command="resume")  # fmt: skip
def test_damaged_run_files_give_one_line_or_success(finished_run, changes, command):
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        _no_training(mp)
        run = _damaged(finished_run, Path(d) / "r", changes)
        argv = {
            "resume": ["train", "--resume", str(run), "--set", "run.progress=none"],
            "analyze": ["analyze", str(run), "--out", str(Path(d) / "a")],
            "evaluate": ["evaluate", str(run), "--split", "test"],
            "collect": ["sweep", "--collect", "--out", d],
        }[command]
        if command == "collect":  # the run as the finished cell of a one-cell sweep
            run.rename(Path(d) / "ce-ir20-s0")
            record = {"methods": ["ce"], "imbalance": [0.05], "seeds": [0], "recipe": None}
            (Path(d) / "sweep.json").write_text(json.dumps(record))
        try:
            rc, _, err = _cli(argv)
        except _Accepted:
            event("resume reached training")
            return
        _one_line_or_success(rc, err)


good_sweeps = st.fixed_dictionaries(
    {
        "methods": st.lists(st.sampled_from(["ce", "etf_dr", "la"]), min_size=1, unique=True),
        "imbalance": st.lists(st.sampled_from([0.01, 0.05, 0.1, 1.0]), min_size=1, unique=True),
        "seeds": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3, unique=True),
        "recipe": st.none(),
    }
)
sweep_records = st.one_of(
    good_sweeps,
    st.tuples(
        good_sweeps,
        st.dictionaries(
            st.sampled_from(["methods", "imbalance", "seeds", "overrides", "epochs"]),
            st.one_of(st.none(), st.integers(-1, 2), st.lists(st.integers(0, 1), max_size=2)),
            max_size=2,
        ),
    ).map(lambda pair: {**pair[0], **pair[1]}),
    st.dictionaries(
        st.sampled_from(["methods", "imbalance", "seeds", "overrides", "recipe", "epochs"]),
        st.one_of(
            st.lists(st.one_of(st.integers(-2, 3), st.floats(), st.text(max_size=3)), max_size=3),
            st.integers(),
            st.text(max_size=5),
            st.none(),
        ),
    ),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=10),
)


@settings(max_examples=100, **SETTINGS)
@given(record=sweep_records, raw=st.one_of(st.none(), st.binary(max_size=30)))
def test_sweep_records_give_one_line_or_a_table(record, raw):
    with tempfile.TemporaryDirectory() as d:
        text = raw if raw is not None else json.dumps(record, allow_nan=True).encode()
        (Path(d) / "sweep.json").write_bytes(text)
        rc, _, err = _cli(["sweep", "--collect", "--out", d])
        _one_line_or_success(rc, err)
