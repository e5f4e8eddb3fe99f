"""What the reliability catalogue's cases put in their workspace before they run (config files,
image folders, CIFAR folders, damaged run files, caches). Each function returns a setup
``(ws: Path) -> None`` for :class:`test_reliability_harness.Case`."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

Setup = Callable[[Path], None]


def chain(*setups: Setup) -> Setup:
    def run(ws: Path) -> None:
        for s in setups:
            s(ws)

    return run


def file(rel: str, content: bytes | str) -> Setup:
    """Write ``ws/rel``."""

    def run(ws: Path) -> None:
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)

    return run


def link(rel: str, target: str) -> Setup:
    """A symbolic link ``ws/rel`` to ``ws/target`` (which need not exist)."""

    def run(ws: Path) -> None:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).symlink_to(ws / target)

    return run


def folder(rel: str) -> Setup:
    return lambda ws: (ws / rel).mkdir(parents=True, exist_ok=True)


def damage(rel: str, how: str = "truncate") -> Setup:
    """Damage a file of the workspace: ``truncate`` (first half), ``empty``, ``garbage``."""

    def run(ws: Path) -> None:
        p = ws / rel
        data = p.read_bytes()
        garbage = b"\x80junk\x00\n" * 64
        p.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": garbage}[how])

    return run


def torch_file(rel: str, obj: object) -> Setup:
    def run(ws: Path) -> None:
        import torch

        torch.save(obj, ws / rel)

    return run


def images(
    rel: str = "img",
    train: Sequence[int] = (8, 6, 4, 3),
    test: int = 2,
    classes: str = "abcd",
    empty: str = "",
) -> Setup:
    """A tiny image folder ``rel/{train,test}/<class>/*.png``; the classes named in ``empty``
    get folders without images."""

    def run(ws: Path) -> None:
        from PIL import Image

        rng = np.random.default_rng(0)
        for split, counts in (("train", train), ("test", [test] * len(classes))):
            for c, n in zip(classes, counts):
                d = ws / rel / split / c
                d.mkdir(parents=True, exist_ok=True)
                for i in range(0 if c in empty else n):
                    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                    Image.fromarray(a).save(d / f"{i:04d}.png")

    return run


def cached_images(rel: str = "img") -> Setup:
    """An image folder with its decoded cache where the harness points ``$NCOLLAPSE_CACHE``
    (``home/cache``: never beside the data)."""

    def run(ws: Path) -> None:
        from ncollapse.data.imagefolder import read_imagefolder

        images(rel)(ws)
        read_imagefolder(ws / rel, cache_dir=ws / "home" / "cache")

    return run


def damage_cache(rel: str = "img") -> Setup:
    def run(ws: Path) -> None:
        for p in (ws / "home" / "cache").glob("*.npz"):
            p.write_bytes(p.read_bytes()[:1000])

    return run


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar10(rel: str = "data/cifar-10-batches-py", drop: Sequence[str] = ()) -> Setup:
    """A tiny ``cifar-10-batches-py`` in the official format, without the files in ``drop``."""

    def run(ws: Path) -> None:
        d = ws / rel
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        labels = np.tile(np.arange(10), 4)
        for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
            x = rng.integers(0, 256, (len(part), 3072), dtype=np.uint8)
            _dump(d / f"data_batch_{i + 1}", {b"labels": labels[part].tolist(), b"data": x})
        x = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        _dump(d / "test_batch", {b"labels": np.tile(np.arange(10), 2).tolist(), b"data": x})
        _dump(d / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        for name in drop:
            (d / name).unlink()

    return run


def features(rel: str, kind: str) -> Setup:
    """A features file for ``analyze --features``: ``nan``, ``npy``, ``text`` or ``good``."""

    def run(ws: Path) -> None:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(12, 4)), np.arange(12) % 3
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind in ("nan", "good"):
            if kind == "nan":
                x[2, 1] = np.nan
            np.savez(p, features=x, labels=y)
        elif kind == "npy":
            np.save(p, x)
        else:
            p.write_text("features,labels\n1,2\n")

    return run


def listfile(rel: str = "l", train: str | bytes = "", test: str | bytes = "", n: int = 6) -> Setup:
    """A list-file dataset ``rel/``: ``n`` PNGs ``img/<i>.png`` and the lists ``train.txt`` and
    ``test.txt`` as given (default: images i with label i % 3)."""

    def run(ws: Path) -> None:
        from PIL import Image

        d = ws / rel
        (d / "img").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / "img" / f"{i}.png")
        default = "".join(f"img/{i}.png {i % 3}\n" for i in range(n))
        for name, text in (("train.txt", train or default), ("test.txt", test or default)):
            (d / name).write_bytes(text.encode() if isinstance(text, str) else text)

    return run


def edit_yaml(rel: str, key: str, value: object) -> Setup:
    """Set the dotted ``key`` of the YAML file ``ws/rel`` (a run's ``config.yaml``)."""

    def run(ws: Path) -> None:
        import yaml

        p = ws / rel
        doc = yaml.safe_load(p.read_text())
        *sections, leaf = key.split(".")
        cur = doc
        for s in sections:
            cur = cur[s]
        cur[leaf] = value
        p.write_text(yaml.safe_dump(doc, sort_keys=False))

    return run


def poison(rel: str, only: str = "") -> Setup:
    """NaN in the weights of a checkpoint or ``model.pt`` (every floating-point tensor, or only
    those whose name contains ``only``, such as ``running_var``)."""

    def run(ws: Path) -> None:
        import torch

        p = ws / rel
        obj = torch.load(p, map_location="cpu", weights_only=False)
        state = obj["model"] if "model" in obj else obj
        hit = 0
        for name, t in state.items():
            if t.is_floating_point() and only in name:
                t.fill_(float("nan"))
                hit += 1
        assert hit, f"no tensor of {rel} matches {only!r}"
        torch.save(obj, p)

    return run


def pretrained(rel: str, nan: bool = True) -> Setup:
    """A weight file for the digits backbone (``model.pretrained``), NaN throughout."""

    def run(ws: Path) -> None:
        import torch

        from ncollapse.models import build_backbone

        state = build_backbone("digits_cnn", in_channels=1).state_dict()
        for t in state.values():
            if nan and t.is_floating_point():
                t.fill_(float("nan"))
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, ws / rel)

    return run


def trained(folder: str, *argv: str) -> Setup:
    """A run trained from the folder ``ws/folder`` (``ncollapse train ARGV`` run there)."""

    def run(ws: Path) -> None:
        import contextlib
        import io
        import os

        from ncollapse.cli import main

        old = os.getcwd()
        os.chdir(ws / folder)
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                assert main(["train", *argv]) == 0, sink.getvalue()
        finally:
            os.chdir(old)

    return run


def pickled(rel: str, obj: object) -> Setup:
    """A pickle of ``obj`` at ``ws/rel`` (a CIFAR batch or meta file of one's own)."""

    def run(ws: Path) -> None:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        _dump(ws / rel, obj)

    return run
