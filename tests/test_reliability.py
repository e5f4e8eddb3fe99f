"""The reliability catalogue (issue 13): every bad input we know of, across every command, as one
parametrised table. Each case asserts its exit code, a single ``ncollapse: error:`` line on
stderr (no traceback) naming what matters, that nothing was written for a refused command, and
that the earlier runs in its workspace (``runs/done``, ``runs/half``) are byte-identical
afterwards. The machinery is in ``test_reliability_harness.py``, the workspace setups in
``test_reliability_setups.py``; ``docs/errors.md`` describes what each kind of mistake gets.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import test_reliability_setups as S
from test_reliability_harness import QUIET, Case, judge, run_case
from test_ufm_cli import BAD as UFM_BAD

OUT = ["--out", "{ws}/runs"]
T = ["train", *OUT, *QUIET]  # a new run beside the earlier ones
R = ["train", "--resume", "{ws}/runs/half", *QUIET]  # resume the resumable run
SW = ["sweep", "--out", "{ws}/sw", "--epochs", "1", *QUIET]
DIGITS_ONE_EPOCH = ["--epochs", "1", "--name", "new"]


def _kill_at(epoch: int, exc: type[BaseException] = KeyboardInterrupt):
    def patch(mp: pytest.MonkeyPatch) -> None:
        from ncollapse.engine.loop import Trainer

        real = Trainer.train_epoch

        def dying(self, e):
            if e == epoch:
                raise exc
            return real(self, e)

        mp.setattr(Trainer, "train_epoch", dying)

    return patch


def _sigterm_at(epoch: int):
    """``kill PID`` (SIGTERM) as epoch ``epoch`` (0-based) starts: a scheduler preempting."""

    def patch(mp: pytest.MonkeyPatch) -> None:
        import os
        import signal

        from ncollapse.engine.loop import Trainer

        real = Trainer.train_epoch

        def killed(self, e):
            if e == epoch:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(self, e)

        mp.setattr(Trainer, "train_epoch", killed)

    return patch


def _no_network(mp: pytest.MonkeyPatch) -> None:
    import urllib.error
    import urllib.request

    def refuse(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    mp.setattr(urllib.request, "urlopen", refuse)


def _nan_after(epoch: int, buffer: str = ""):
    """NaN in a weight after epoch ``epoch`` (0-based): what a learning rate far too high does;
    with ``buffer`` (``running_var``), in that BatchNorm buffer only, the weights finite."""

    def patch(mp: pytest.MonkeyPatch) -> None:
        import torch

        from ncollapse.engine.loop import Trainer

        real = Trainer.train_epoch

        def poisoned(self, e):
            rec = real(self, e)
            if e == epoch:
                with torch.no_grad():
                    if buffer:
                        next(b for n, b in self.network.named_buffers() if buffer in n).fill_(
                            float("nan")
                        )
                    else:
                        next(self.network.parameters()).fill_(float("nan"))
            return rec

        mp.setattr(Trainer, "train_epoch", poisoned)

    return patch


def _classes(n: int):
    def check(ws, err):
        data = json.loads((ws / "runs" / "new" / "data.json").read_text())
        return None if len(data["classes"]) == n else f"trained on {data['classes']}"

    return check


def _no_dir(name: str):
    return lambda ws, err: f"{name} left behind" if (ws / "runs" / name).exists() else None


def _finished(name: str):
    return lambda ws, err: None if (ws / "runs" / name / "summary.json").is_file() else "no summary"


def _finite_checkpoint(ws, err):
    """The kept checkpoint loads (every weight and buffer finite) at epoch 1."""
    from ncollapse.rundir import Run

    return None if Run(ws / "runs" / "new").load_checkpoint()["epoch"] == 1 else "not epoch 1"


def _has_checkpoint(ws, err):
    return None if (ws / "runs" / "new" / "checkpoint.pt").is_file() else "no checkpoint kept"


def _resumable(rel: str):
    """The run at ``ws/rel`` has a checkpoint that loads (finite, whole); no temporary file."""

    def check(ws, err):
        from ncollapse.rundir import Run

        if list((ws / rel).glob(".*.tmp")):
            return "temporary files left behind"
        Run(ws / rel).load_checkpoint()  # a UserError fails the case
        return None

    return check


def _checkpoint_kept(ws, err):
    """The earlier checkpoint is whole and loads; no temporary file is left."""
    from ncollapse.rundir import Run

    half = ws / "runs" / "half"
    if list(half.glob(".*.tmp")):
        return "temporary files left behind"
    return None if Run(half).load_checkpoint()["epoch"] == 1 else "the checkpoint changed"


IMG = ["--set", "data.name=imagefolder", "--set", "data.root={ws}/img"]
CIFAR = ["--set", "data.name=cifar10", "--epochs", "1"]
LIST = ["--set", "data.name=listfile", "--set", "data.root={ws}/l", "--set", "data.size=8",
        "--set", "data.train_list=train.txt", "--set", "data.test_list=test.txt"]  # fmt: skip
SETTINGS = json.dumps({"recipe": None, "epochs": 5, "subset_seed": 0, "overrides": [],
                       "methods": ["ce"], "imbalance": [0.05], "seeds": [0]})  # fmt: skip

C = Case
# fmt: off
CASES: list[Case] = [
    # -------------------------------------------------------- the command line itself
    C("argparse: train --bogus", ["train", "--bogus"], "unrecognized arguments: --bogus"),
    C("argparse: analyze --bogus", ["analyze", "--bogus"], "unrecognized arguments: --bogus"),
    C("argparse: sweep --bogus", ["sweep", "--bogus"], "ncollapse sweep"),
    C("argparse: compare --bogus", ["compare", "--bogus"], "ncollapse compare"),
    C("argparse: ufm solve --bogus", ["ufm", "solve", "--counts", "5x3", "--bogus"], "--bogus"),
    C("argparse: unknown command", ["bogus"], "invalid choice"),
    C("argparse: train --epochs abc", ["train", "--epochs", "abc"], "--epochs"),
    C("argparse: train --imbalance (no value)", ["train", "--imbalance"], "expected one argument"),
    C("argparse: sweep --subset-seed x", ["sweep", "--subset-seed", "x"], "--subset-seed"),
    C("argparse: compare --seed 1.5", ["compare", "--seed", "1.5"], "--seed"),
    C("argparse: sweep --ratio with --imbalance", ["sweep", "--ratio", "10", "--imbalance", "0.1"],
      "not allowed with"),
    C("argparse: sweep --list --collect", ["sweep", "--list", "--collect"], "not allowed with"),
    # -------------------------------------------------------- config values and names
    C("config: --set typo", [*T, "--set", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
    C("config: --set long name", [*T, "--set", "optim.learning_rate=0.1"],
      "did you mean 'optim.lr'?"),
    C("config: --set other section", [*T, "--set", "loss.lr=0.1"], "did you mean 'optim.lr'?"),
    C("config: --imbalance 100", [*T, "--imbalance", "100"], "must be in (0, 1]"),
    C("config: data.imbalance=0", [*T, "--set", "data.imbalance=0"], "must be in (0, 1]"),
    C("config: --imbalance inf", [*T, "--imbalance", "inf"], "data.imbalance", absent=("r = 0",)),
    C("config: --imbalance nan", [*T, "--imbalance", "nan"], "data.imbalance"),
    C("config: --imbalance -1", [*T, "--imbalance", "-1"], "data.imbalance"),
    C("config: --method typo", [*T, "--method", "etfdr"], "(--method); did you mean 'etf_dr'"),
    C("config: unknown recipe", [*T, "--config", "no_such_recipe"], "valid: cifar100_lt"),
    C("config: recipe typo", [*T, "--config", "cifar10_ltt"], "did you mean 'cifar10_lt'"),
    C("config: dr on a linear head", [*T, "--set", "model.head=linear", "--set", "loss.name=dr"],
      "needs model.head=etf"),
    C("config: lr nan", [*T, "--set", "optim.lr=nan"], "optim.lr"),
    C("config: lr inf", [*T, "--set", "optim.lr=inf"], "optim.lr"),
    C("config: lr -1", [*T, "--set", "optim.lr=-1"], "optim.lr"),
    C("config: lr a list", [*T, "--set", "optim.lr=[1,2]"], "optim.lr"),
    C("config: momentum -0.5", [*T, "--set", "optim.momentum=-0.5"], "optim.momentum"),
    C("config: momentum 1", [*T, "--set", "optim.momentum=1"], "optim.momentum"),
    C("config: weight decay -1", [*T, "--set", "optim.weight_decay=-1"], "optim.weight_decay"),
    C("config: warm-up nan", [*T, "--set", "optim.warmup_epochs=nan"], "optim.warmup_epochs"),
    C("config: checkpoint_every 0", [*T, "--set", "run.checkpoint_every=0"], "checkpoint_every"),
    C("config: --set without =", [*T, "--set", "optim.lr"], "key=value"),
    C("config: --set with empty key", [*T, "--set", "=3"], "key is empty"),
    C("config: --set on a section", [*T, "--set", "optim=3"], "is a section"),
    C("config: epochs abc", [*T, "--set", "optim.epochs=abc"], "optim.epochs"),
    C("config: epochs 2.5", [*T, "--set", "optim.epochs=2.5"], "optim.epochs"),
    C("config: --epochs 0", [*T, "--epochs", "0"], "epochs must be >= 1"),
    C("config: --epochs -3", [*T, "--epochs", "-3"], "epochs must be >= 1"),
    C("config: --seed -1", [*T, "--seed", "-1"], "seed"),
    C("config: --seed 1e20", [*T, "--seed", "99999999999999999999"], "seed"),
    C("config: subset seed -1", [*T, "--set", "data.subset_seed=-1"], "data.subset_seed"),
    C("config: etf seed 2**70", [*T, "--set", f"model.etf_seed={2**70}"], "model.etf_seed"),
    C("config: unknown dataset", [*T, "--set", "data.name=cifar11"], "did you mean 'cifar10'"),
    C("config: unknown backbone", [*T, "--set", "model.backbone=resnet33"], "did you mean"),
    C("config: --device tpu", [*T, "--device", "tpu"], "unknown device 'tpu'"),
    C("config: --device cuda:99", [*T, "--device", "cuda:99"], "cuda"),
    C("config: threads 0", [*T, "--set", "run.threads=0"], "run.threads"),
    C("config: batch size 0", [*T, "--set", "optim.batch_size=0"], "optim.batch_size"),
    C("config: data.size 0", [*T, "--set", "data.size=0"], "data.size"),
    C("config: width 0", [*T, "--set", "model.width=0"], "model.width"),
    C("config: val without a split", [*T, "--set", "eval.splits=[val]"], "data.val=unused"),
    C("config: milestones decreasing", [*T, "--set", "optim.milestones=[3,1]"], "milestones"),
    C("config: test fraction 2", [*T, "--set", "data.test_fraction=2"], "data.test_fraction"),
    C("config: --print-config typo", ["train", "--print-config", "--set", "optim.lrr=1"],
      "did you mean"),
    # -------------------------------------------------------- config files
    C("file: empty", [*T, "--config", "{ws}/cfg/empty.yaml"], "is empty",
      setup=S.file("cfg/empty.yaml", "")),
    C("file: not UTF-8", [*T, "--config", "{ws}/cfg/latin1.yaml"], "not UTF-8",
      setup=S.file("cfg/latin1.yaml", "name: caf\xe9\n".encode("latin-1"))),
    C("file: a list", [*T, "--config", "{ws}/cfg/list.yaml"], "mapping",
      setup=S.file("cfg/list.yaml", "- 1\n- 2\n")),
    C("file: bad YAML", [*T, "--config", "{ws}/cfg/bad.yaml"], "cannot parse",
      setup=S.file("cfg/bad.yaml", "optim: {lr: [\n")),
    C("file: NUL bytes", [*T, "--config", "{ws}/cfg/nul.yaml"], "cfg/nul.yaml",
      setup=S.file("cfg/nul.yaml", b"optim:\x00\x01\n")),
    C("file: python tag", [*T, "--config", "{ws}/cfg/tag.yaml"], "cannot parse",
      setup=S.file("cfg/tag.yaml", "optim: !!python/object:os.system {}\n")),
    C("file: a directory", [*T, "--config", "{ws}/cfg"], "directory", setup=S.folder("cfg")),
    C("file: extends itself", [*T, "--config", "{ws}/cfg/loop.yaml"], "extends",
      setup=S.file("cfg/loop.yaml", "extends: loop.yaml\n")),
    C("file: extends a missing file", [*T, "--config", "{ws}/cfg/x.yaml"], "not found",
      setup=S.file("cfg/x.yaml", "extends: nowhere.yaml\n")),
    C("file: method is a number", [*T, "--config", "{ws}/cfg/m.yaml"], "preset name",
      setup=S.file("cfg/m.yaml", "method: 3\n")),
    C("file: method typo", [*T, "--config", "{ws}/cfg/m.yaml"],
      "('method:' in {ws}/cfg/m.yaml); did you mean 'etf_dr'", setup=S.file("cfg/m.yaml",
      "method: etfdr\n")),
    C("file: unknown key", [*T, "--config", "{ws}/cfg/k.yaml"], "did you mean 'optim.lr'",
      setup=S.file("cfg/k.yaml", "optim: {lrr: 0.1}\n")),
    C("file: section is a number", [*T, "--config", "{ws}/cfg/s.yaml"], "'optim' is a section",
      setup=S.file("cfg/s.yaml", "optim: 3\n")),
    # -------------------------------------------------------- where a run goes
    C("rundir: --name ../x", [*T, "--name", "../x"], "plain directory name"),
    C("rundir: --name a/b", [*T, "--name", "a/b"], "plain directory name"),
    C("rundir: --set run.name=..", [*T, "--set", "run.name=.."], "plain directory name"),
    C("rundir: --name of an earlier run", [*T, "--name", "done"], "--resume"),
    C("rundir: --name of a file", [*T, "--name", "afile"], "is a file",
      setup=S.file("runs/afile", "x")),
    C("rundir: --out a file", ["train", "--out", "{ws}/f", *QUIET], "is a file",
      setup=S.file("f", "x")),
    C("rundir: --out under a file", ["train", "--out", "{ws}/f/sub", *QUIET], "{ws}/f",
      setup=S.file("f", "x")),
    C("rundir: --out unwritable", ["train", "--out", "/proc/ncollapse-x", *QUIET],
      "cannot write /proc/ncollapse-x (No such file or directory); give --out another folder",
      absent=("; or ",)),
    # -------------------------------------------------------- resuming
    C("resume: with --config", [*R, "--config", "cifar10_lt"], "--config"),
    C("resume: with --name", [*R, "--name", "x"], "--name"),
    C("resume: with --out", [*R, "--out", "{ws}/o"], "--out"),
    C("resume: with --epochs", [*R, "--epochs", "3"], "--epochs"),
    C("resume: with --method", [*R, "--method", "ce"], "--method"),
    C("resume: another lr", [*R, "--set", "optim.lr=0.3"], "optim.lr: 0.1 -> 0.3"),
    C("resume: a file", ["train", "--resume", "{ws}/f"], "not a directory", setup=S.file("f", "x")),
    C("resume: not a run", ["train", "--resume", "{ws}/runs"], "not a run directory"),
    C("resume: nowhere", ["train", "--resume", "{ws}/nowhere"], "does not exist"),
    C("resume: truncated checkpoint", R, "checkpoint.pt", setup=S.damage("runs/half/checkpoint.pt")),
    C("resume: empty checkpoint", R, "checkpoint.pt",
      setup=S.damage("runs/half/checkpoint.pt", "empty")),
    C("resume: garbage checkpoint", R, "checkpoint.pt",
      setup=S.damage("runs/half/checkpoint.pt", "garbage")),
    C("resume: checkpoint of something else", R, "checkpoint.pt",
      setup=S.torch_file("runs/half/checkpoint.pt", {"x": 1})),
    C("resume: truncated config.yaml", R, "config.yaml",
      setup=S.file("runs/half/config.yaml", "optim: {lr: [\n")),
    C("resume: config.yaml a list", R, "config.yaml",
      setup=S.file("runs/half/config.yaml", "- 1\n")),
    C("resume: config.yaml not UTF-8", R, "config.yaml",
      setup=S.damage("runs/half/config.yaml", "garbage")),
    C("resume: config.yaml empty", R, "config.yaml",
      setup=S.damage("runs/half/config.yaml", "empty")),
    C("resume: config.yaml unknown key", R, "no_such_key", setup=S.file(
      "runs/half/config.yaml", "data: {}\nmodel: {}\noptim: {}\nloss: {no_such_key: 1}\n")),
    C("resume: config.yaml without its sections", R,
      "config.yaml is damaged (no data or model or optim section)",
      setup=S.file("runs/half/config.yaml", "{}\n")),
    C("evaluate: config.yaml without its data section", ["evaluate", "{ws}/runs/done"],
      "config.yaml is damaged (no data section)",
      setup=S.file("runs/done/config.yaml", "data: 5\nmodel: {}\noptim: {}\n")),
    C("resume: damaged data.json", R, "data.json", setup=S.damage("runs/half/data.json")),
    C("resume: data.json without class_counts", R, "data.json is damaged (no list of "
      "class_counts)", setup=S.file("runs/half/data.json", '{"classes": []}')),
    C("evaluate: data.json without class_counts", ["evaluate", "{ws}/runs/done"],
      "data.json is damaged", setup=S.file("runs/done/data.json", "{}")),
    C("resume: damaged metrics.jsonl", R, "metrics.jsonl",
      setup=S.damage("runs/half/metrics.jsonl", "garbage")),
    C("resume: torn last metrics line", R, rc=0, trains=True, writes=True,
      setup=S.file("runs/half/metrics.jsonl", '{"epoch": 1, "kind": "train"}\n{"epo'),
      check=_finished("half")),
    # -------------------------------------------------------- analyze
    C("analyze: nowhere", ["analyze", "{ws}/nowhere"], "does not exist"),
    C("analyze: not a run", ["analyze", "{ws}/runs"], "metrics.jsonl"),
    C("analyze: three runs", ["analyze", "a", "b", "c"], "at most two"),
    C("analyze: nothing", ["analyze"], "give a run directory"),
    C("analyze: --tail without --features", ["analyze", "{ws}/runs/done", "--tail", "1"],
      "apply to --features"),
    C("analyze: damaged collapse_final.npz", ["analyze", "{ws}/runs/done", "--out", "{ws}/a"],
      "collapse_final.npz", setup=S.damage("runs/done/collapse_final.npz")),
    C("analyze: damaged summary.json", ["analyze", "{ws}/runs/done", "--out", "{ws}/a"],
      "summary.json", setup=S.damage("runs/done/summary.json")),
    C("analyze: damaged metrics.jsonl", ["analyze", "{ws}/runs/done", "--out", "{ws}/a"],
      "metrics.jsonl", setup=S.damage("runs/done/metrics.jsonl", "garbage")),
    C("analyze: damaged config.yaml", ["analyze", "{ws}/runs/done", "--out", "{ws}/a"],
      "config.yaml", setup=S.file("runs/done/config.yaml", "a: [\n")),
    C("analyze: features with NaN", ["analyze", "--features", "{ws}/f/x.npz"], "NaN",
      setup=S.features("f/x.npz", "nan")),
    C("analyze: features .npy", ["analyze", "--features", "{ws}/f/x.npy"], ".npy",
      setup=S.features("f/x.npy", "npy")),
    C("analyze: features not a zip", ["analyze", "--features", "{ws}/f/x.npz"], ".npz",
      setup=S.features("f/x.npz", "text")),
    # -------------------------------------------------------- data
    C("data: empty class folder", [*T, *IMG, *DIGITS_ONE_EPOCH], "img/train/d", data=True,
      setup=S.images(empty="d")),
    C("data: one class", [*T, *IMG, *DIGITS_ONE_EPOCH, "--method", "ce"], "one class", data=True,
      setup=S.images(classes="a")),
    C("data: imagefolder without root", [*T, "--set", "data.name=imagefolder"], "data.root",
      data=True),
    C("data: imagefolder root missing", [*T, *IMG], "not found", data=True),
    C("data: imagefolder root a file", [*T, *IMG], "no images", data=True, setup=S.file("img", "x")),
    C("data: corrupt image", [*T, *IMG], "0001.png", data=True,
      setup=S.chain(S.images(), S.file("img/train/a/0001.png", "not a png"))),
    C("data: train/test classes differ", [*T, *IMG], "missing: d", data=True,
      setup=S.chain(S.images(), lambda ws: __import__("shutil").rmtree(ws / "img/test/d"))),
    C("data: truncated cache rebuilt", [*T, *IMG, *DIGITS_ONE_EPOCH, "--imbalance", "0.5"],
      "rebuilding", rc=0,
      trains=True, setup=S.chain(S.cached_images(), S.damage_cache()), check=_classes(4)),
    C("data: cifar10 data.root missing", [*T, *CIFAR, "--set", "data.root={ws}/nowhere"],
      "{ws}/nowhere", data=True, absent=("{ws}/data",)),
    C("data: cifar100 data.root missing", [*T, *CIFAR, "--set", "data.name=cifar100", "--set",
      "data.root={ws}/nowhere"], "{ws}/nowhere", data=True, absent=("{ws}/data",)),
    C("data: mnist data.root missing", [*T, "--set", "data.name=mnist", "--set",
      "data.root={ws}/nowhere"], "{ws}/nowhere", data=True, absent=("{ws}/data",)),
    C("data: partial cifar10 in data.root", [*T, *CIFAR, "--set", "data.root={ws}/c"],
      "incomplete", data=True, setup=S.cifar10("c/cifar-10-batches-py", drop=["data_batch_3"])),
    C("data: partial cifar10 in ./data", [*T, *CIFAR], "data_batch_3", data=True,
      setup=S.cifar10(drop=["data_batch_3", "test_batch"])),
    C("data: corrupt cifar10 batch", [*T, *CIFAR], "data_batch_2", data=True,
      setup=S.chain(S.cifar10(), S.damage("data/cifar-10-batches-py/data_batch_2"))),
    C("data: truncated cifar10 archive", [*T, *CIFAR, "--set", "data.root={ws}/c"], "md5",
      data=True, setup=S.file("c/cifar-10-python.tar.gz", b"\x1f\x8b" + b"0" * 100)),
    C("data: cifar10 --download into a new data.root without a network", [*T, *CIFAR,
      "--download", "--set", "data.root={ws}/new/data"], "could not download", data=True,
      patch=_no_network),
    C("data: mnist --download without a network", [*T, "--set", "data.name=mnist",
      "--download"], "could not download", data=True, patch=_no_network),
    C("data: data.cache_dir a file", [*T, *IMG, "--set", "data.cache_dir={ws}/c"],
      "data.cache_dir {ws}/c is not a folder", data=True,
      setup=S.chain(S.images(), S.file("c", "x"))),
    C("data: cifar10 meta without label_names", [*T, *CIFAR, "--set", "data.root={ws}/c"],
      "batches.meta: 'label_names' must list the 10 class names", data=True, setup=S.chain(
      S.cifar10("c/cifar-10-batches-py"), S.pickled("c/cifar-10-batches-py/batches.meta",
      {b"names": 1}))),
    C("data: cifar10 labels out of range", [*T, *CIFAR, "--set", "data.root={ws}/c"],
      "data_batch_1: 'labels' must be integers 0..9", data=True, setup=S.chain(
      S.cifar10("c/cifar-10-batches-py"), S.pickled("c/cifar-10-batches-py/data_batch_1",
      {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, -1, 12]}))),
    C("data: listfile without lists", [*T, "--set", "data.name=listfile"], "data.root", data=True),
    # -------------------------------------------------------- training (the divergence guard)
    C("train: NaN after a checkpoint", [*T, "--epochs", "3", "--name", "new"],
      "last good checkpoint (epoch 1)", trains=True, patch=_nan_after(1),
      check=_has_checkpoint),
    C("train: NaN only in a BatchNorm buffer", [*T, "--epochs", "3", "--name", "new"],
      "training diverged in epoch 2: 1 weight/BatchNorm tensors hold NaN or inf (backbone."
      "features.0.1.running_var); the last good checkpoint (epoch 1) is kept", trains=True,
      patch=_nan_after(1, buffer="running_var"), check=_finite_checkpoint),
    C("train: NaN in the first epoch", [*T, "--method", "ce", "--set", "optim.lr=1e6",
      "--epochs", "3", "--name", "new"], "was removed", trains=True, check=_no_dir("new")),
    C("train: interrupted", [*T, "--epochs", "3", "--name", "new"],
      "ncollapse train --resume {ws}/runs/new", rc=130, trains=True, patch=_kill_at(1),
      check=_has_checkpoint),
    C("train: interrupted in the first epoch", [*T, "--epochs", "3", "--name", "new"],
      "nothing was kept", rc=130, trains=True, patch=_kill_at(0), check=_no_dir("new")),
    C("train: SIGTERM", [*T, "--epochs", "3", "--name", "new"], "stopped by SIGTERM: "
      "checkpoint saved in epoch 2 after step 1 of 7 in {ws}/runs/new; continue with `ncollapse "
      "train --resume {ws}/runs/new` (exit status 143", rc=143, trains=True,
      patch=_sigterm_at(1), check=_resumable("runs/new")),
    C("train: SIGTERM in the first epoch", [*T, "--epochs", "3", "--name", "new"],
      "checkpoint saved in epoch 1 after step 1", rc=143, trains=True, patch=_sigterm_at(0),
      check=_resumable("runs/new")),
    C("train --resume: SIGTERM", R, "continue with `ncollapse train --resume {ws}/runs/half`",
      rc=143, trains=True, writes=True, patch=_sigterm_at(1), check=_resumable("runs/half"),
      setup=S.edit_yaml("runs/half/config.yaml", "optim.epochs", 3)),
    C("sweep: SIGTERM", ["sweep", "--out", "{ws}/sw", "--epochs", "2", "--seeds", "0",
      "--methods", "ce", *QUIET], "to continue the sweep from there (exit status 143", rc=143,
      trains=True, log=True, patch=_sigterm_at(1), check=_resumable("sw/ce-ir20-s0")),
    # -------------------------------------------------------- compare
    C("compare: a method twice", ["compare", *OUT, "--methods", "ce,ce"], "twice"),
    C("compare: no methods", ["compare", *OUT, "--methods", ","], "--methods is empty"),
    C("compare: unknown method", ["compare", *OUT, "--methods", "ce,bogus"],
      "unknown method 'bogus' (--methods)"),
    C("compare: method typo", ["compare", *OUT, "--methods", "etfdr,ce"],
      "(--methods); did you mean 'etf_dr'"),
    C("compare: --config-a alone", ["compare", *OUT, "--config-a", "x.yaml"], "go together"),
    C("compare: other data", ["compare", *OUT, "--config-a", "cifar10_lt", "--config-b",
      "cifar100_lt"], "data.name"),
    C("compare: --out a file", ["compare", "--out", "{ws}/f"], "is a file", setup=S.file("f", "x")),
    C("compare: --imbalance 5", ["compare", *OUT, "--imbalance", "5"], "data.imbalance"),
    # -------------------------------------------------------- sweep
    C("sweep: method typo", [*SW, "--methods", "ce,etf_rd"], "(--methods); did you mean 'etf_dr'"),
    C("sweep: no methods", [*SW, "--methods", ","], "--methods is empty"),
    C("sweep: a method twice", [*SW, "--methods", "ce,ce"], "twice"),
    C("sweep: no seeds", [*SW, "--seeds", ""], "--seeds is empty"),
    C("sweep: seed a", [*SW, "--seeds", "0,a"], "--seeds takes integers"),
    C("sweep: seed twice", [*SW, "--seeds", "1,1"], "seed twice"),
    C("sweep: seed -1", [*SW, "--seeds", "-1"], "seed"),
    C("sweep: imbalance 0", [*SW, "--imbalance", "0"], "must be finite and > 0"),
    C("sweep: imbalance abc", [*SW, "--imbalance", "abc"], "--imbalance takes numbers"),
    C("sweep: imbalance 100", [*SW, "--imbalance", "100"], "use --ratio 100"),
    C("sweep: ratio twice", [*SW, "--ratio", "100,100"], "twice"),
    C("sweep: ratio inf", [*SW, "--ratio", "inf"], "finite"),
    C("sweep: ratio 0.5", [*SW, "--ratio", "0.5"], "--imbalance 0.5"),
    C("sweep: --set seed", [*SW, "--set", "seed=3"], "use --seeds"),
    C("sweep: --set data.imbalance", [*SW, "--set", "data.imbalance=0.1"], "use --imbalance"),
    C("sweep: --set run.name", [*SW, "--set", "run.name=x"], "run.name"),
    C("sweep: --set typo", [*SW, "--set", "optim.lrr=1"], "did you mean 'optim.lr'"),
    C("sweep: recipe typo", [*SW, "--recipe", "cifar10_ltt"], "did you mean 'cifar10_lt'"),
    C("sweep: --epochs 0", [*SW, "--epochs", "0"], "--epochs must be >= 1"),
    C("sweep: --cell 99", [*SW, "--cell", "99"], "outside the grid"),
    C("sweep: --cell nosuch", [*SW, "--cell", "nosuch"], "not a cell"),
    C("sweep: into a training run", ["sweep", "--out", "{ws}/runs/done"], "training run"),
    C("sweep: --out a file", ["sweep", "--out", "{ws}/f"], "is a file", setup=S.file("f", "x")),
    C("sweep: --out unwritable", ["sweep", "--out", "/proc/ncollapse-x"], "/proc"),
    C("sweep: --collect a non-sweep", ["sweep", "--collect", "--out", "{ws}/runs"], "sweep.json"),
    C("sweep: damaged sweep.json", SW, "sweep.json", setup=S.file("sw/sweep.json", "{\"rec")),
    C("sweep: other settings", SW, "epochs: 5 -> 1", setup=S.file("sw/sweep.json", SETTINGS)),
    C("sweep: damaged finished cell", ["sweep", "--collect", "--out", "{ws}/sw"], "summary.json",
      setup=S.chain(S.file("sw/sweep.json", json.dumps({**json.loads(SETTINGS), "epochs": None,
      "methods": ["ce"], "imbalance": [0.05], "seeds": [0]})), S.file("sw/ce-ir20-s0/config.yaml",
      "{}\n"), S.file("sw/ce-ir20-s0/summary.json", "{"))),
    C("sweep: interrupted", ["sweep", "--out", "{ws}/sw", "--epochs", "2", "--seeds", "0",
      "--methods", "ce", *QUIET], "ncollapse sweep --out {ws}/sw", rc=130, trains=True,
      log=True, patch=_kill_at(1)),
    # -------------------------------------------------------- classes without training images
    C("classes: --imbalance 0.001", [*T, "--imbalance", "0.001"], "no image of classes 7, 8, 9",
      data=True, absent=("test_fraction",)),
    C("classes: --imbalance 1e-300", [*T, "--imbalance", "1e-300"],
      "images of one class only: train counts [122, 0,", data=True),
    C("classes: data.test_fraction=0.999", [*T, "--set", "data.test_fraction=0.999"],
      "lower data.test_fraction (now 0.999)", data=True),
    C("classes: resume a run whose subset has one class", R, "images of one class only",
      data=True, setup=S.edit_yaml("runs/half/config.yaml", "data.imbalance", 1e-300)),
    C("classes: list file, a label only the test list has", [*T, *LIST], "no line of classes 3, "
      "4, 5, 6, 7 (5 of 8", data=True, setup=S.listfile(test="img/0.png 7\nimg/1.png 1\n")),
    C("classes: list file, label 100000000", [*T, *LIST], "100000001 classes", data=True,
      timeout=20, setup=S.listfile(train="img/0.png 100000000\n")),
    C("classes: list file, every label 0", [*T, *LIST], "one class only", data=True,
      setup=S.listfile(train="img/0.png 0\nimg/1.png 0\n", test="img/0.png 0\n")),
    C("data: list file not UTF-8", [*T, *LIST], "train.txt:2: the list file is not UTF-8",
      data=True, setup=S.listfile(train="img/0.png 0\nimg/caf\xe9.png 1\n".encode("latin-1"))),
    C("data: list file label in other digits", [*T, *LIST], "digits 0-9", data=True,
      setup=S.listfile(train="img/0.png 0\nimg/1.png \u0661\n")),
    # -------------------------------------------------------- sizes that cannot fit
    C("sizes: model.width=100000", [*T, "--set", "model.width=100000"], "model.width=100000 "
      "gives the digits_cnn backbone 645 trillion parameters", data=True, timeout=30),
    C("sizes: model.width=10**9", [*T, "--set", "model.width=1000000000"],
      "more values than a tensor can hold: lower model.width", data=True, timeout=30),
    C("sizes: optim.batch_size=1", [*T, "--set", "optim.batch_size=1"],
      "optim.batch_size must be >= 2"),
    C("sizes: optim.batch_size=1 on a resume", [*R, "--set", "optim.batch_size=1"],
      "optim.batch_size must be >= 2"),
    # -------------------------------------------------------- loaded weights must be finite
    C("resume: a checkpoint with NaN weights", R, "checkpoint.pt holds NaN or inf in",
      setup=S.poison("runs/half/checkpoint.pt")),
    C("resume: NaN only in a BatchNorm buffer of the checkpoint", R, "running_var",
      setup=S.poison("runs/half/checkpoint.pt", only="running_var")),
    C("resume: a finished run whose checkpoint is NaN", ["train", "--resume", "{ws}/runs/done",
      *QUIET], "checkpoint.pt holds NaN or inf", setup=S.poison("runs/done/checkpoint.pt")),
    C("evaluate: model.pt with NaN weights", ["evaluate", "{ws}/runs/done"],
      "model.pt holds NaN or inf in", setup=S.poison("runs/done/model.pt")),
    C("evaluate: NaN only in a BatchNorm buffer of model.pt", ["evaluate", "{ws}/runs/done"],
      "running_var", setup=S.poison("runs/done/model.pt", only="running_var")),
    C("evaluate: damaged model.pt", ["evaluate", "{ws}/runs/done"], "model.pt is damaged",
      setup=S.damage("runs/done/model.pt")),
    C("evaluate: no model.pt", ["evaluate", "{ws}/runs/half"], "has no model.pt"),
    C("evaluate: a relative data.root from another folder", ["evaluate", "{ws}/p/runs/rel",
      "--split", "test"], rc=0, data=True, stdout="test accuracy", setup=S.chain(
      S.images("p/img"), S.trained("p", "--epochs", "1", "--out", "runs", "--name", "rel",
      "--imbalance", "0.5", "--set", "data.name=imagefolder", "--set", "data.root=img",
      *QUIET))),
    C("evaluate: --tta on a run trained without flips", ["evaluate", "{ws}/runs/done",
      "--split", "test", "--tta"], "trains without flips (data.augment=none, the default for "
      "digits)", rc=0, data=True,
      stdout="(flip TTA)"),
    C("train: pretrained weights with NaN", [*T, "--set", "model.pretrained={ws}/w.pt"],
      "w.pt holds NaN or inf", data=True, setup=S.pretrained("w.pt")),
    # -------------------------------------------------------- read-only places, a full disk
    C("read-only: train --resume of a finished run", ["train", "--resume", "{ws}/runs/done",
      *QUIET], "cannot write {ws}/runs/done/metrics.jsonl (Permission denied): the folder is "
      "not writable", data=True, readonly=("runs/done",)),
    C("read-only: train --out a read-only folder", ["train", "--out", "{ws}/ro", *QUIET],
      "cannot write {ws}/ro (Permission denied)", setup=S.folder("ro"), readonly=("ro",)),
    C("read-only: analyze RUN", ["analyze", "{ws}/runs/done"], "cannot write {ws}/runs/done "
      "(Permission denied)", readonly=("runs/done",), absent=("--out {ws}",),
      check=lambda ws, err: None if "--out DIR" in err else "no --out hint"),
    C("read-only: analyze --features in a read-only folder", ["analyze", "--features",
      "{ws}/f/x.npz"], "cannot write {ws}/f (Permission denied)", setup=S.features("f/x.npz",
      "good"), readonly=("f",)),
    C("read-only: ufm phase --out in a read-only folder", ["ufm", "phase", "--ratios", "2",
      "--lams", "0.01", "--out", "{ws}/ro/p.png"], "cannot write {ws}/ro (Permission denied)",
      setup=S.folder("ro"), readonly=("ro",)),
    C("read-only: sweep --out in a read-only folder", ["sweep", "--out", "{ws}/ro/sw",
      "--epochs", "1", *QUIET], "{ws}/ro", setup=S.folder("ro"), readonly=("ro",)),
    C("analyze: --out a file", ["analyze", "{ws}/runs/done", "--out", "{ws}/f"],
      "--out {ws}/f is a file, not a folder", setup=S.file("f", "x")),
    C("analyze: --features /dev/zero", ["analyze", "--features", "/dev/zero"],
      "is not a regular file"),
    C("analyze: --train-counts abc", ["analyze", "--features", "{ws}/f/x.npz", "--train-counts",
      "a,b"], "e.g. 5000,2997", setup=S.features("f/x.npz", "good")),
    C("ufm: phase --out a folder", ["ufm", "phase", "--ratios", "2", "--lams", "0.01", "--out",
      "{ws}/d"], "--out {ws}/d is a folder; give the plot's file name", setup=S.folder("d")),
    C("ufm: phase --out x.txt", ["ufm", "phase", "--ratios", "2", "--lams", "0.01", "--out",
      "{ws}/p.txt"], "cannot write a .txt file"),
    C("disk full: train", [*T, *DIGITS_ONE_EPOCH], "cannot write {ws}/runs/new/checkpoint.pt "
      "(File too large): the file-size limit is reached (ulimit -f)", trains=True,
      fsize=300 << 10, check=_no_dir("new")),
    C("disk full: resume", R, "then `ncollapse train --resume {ws}/runs/half` goes on from its "
      "last checkpoint", trains=True, writes=True, fsize=300 << 10, check=_checkpoint_kept,
      setup=S.edit_yaml("runs/half/config.yaml", "optim.epochs", 2)),  # one epoch to go
    C("disk full: sweep", ["sweep", "--out", "{ws}/sw", "--epochs", "1", "--seeds", "0",
      "--methods", "ce", *QUIET], "checkpoint.pt (File too large)", trains=True, log=True,
      fsize=300 << 10),
    C("disk full: analyze", ["analyze", "{ws}/runs/done", "--out", "{ws}/a"],
      "cannot write {ws}/a/collapse_curves.png (File too large)", writes=True, fsize=30 << 10,
      check=lambda ws, err: "a torn file" if any((ws / "a").glob(".*tmp")) else None),
    # -------------------------------------------------------- sweep cells it did not make
    C("sweep: a user's folder named like a cell", SW, "holds files a run does not write "
      "(notes.txt) (and 1 more cells); nothing was deleted",
      setup=S.chain(S.file("sw/ce-ir20-s0/notes.txt", "mine"), S.file("sw/ce-ir20-s1/a", "b"))),
    C("sweep --list: a user's folder named like a cell", [*SW, "--list"], rc=0,
      stdout="ce-ir20-s0                       blocked ({ws}/sw/ce-ir20-s0 holds files",
      setup=S.file("sw/ce-ir20-s0/notes.txt", "mine")),
    C("sweep: a user's file in a cell the sweep made", SW, "(notes.txt)", setup=S.chain(
      S.file("sw/ce-ir20-s0/config.yaml", "{}\n"), S.file("sw/ce-ir20-s0/notes.txt", "mine"),
      S.file("sw/.ce-ir20-s0.created", ""))),
    C("sweep: an unfinished run it did not make", SW, "an unfinished run this sweep did not make",
      setup=S.file("sw/ce-ir20-s0/config.yaml", "{}\n")),
    C("sweep: a cell path that is a file", SW, "ce-ir20-s0 is a file, not a cell directory",
      setup=S.file("sw/ce-ir20-s0", "x")),
    C("sweep: a cell path that is a symlink", SW, "is a symbolic link", setup=S.chain(
      S.file("elsewhere/notes.txt", "mine"), S.link("sw/etf_dr-ir20-s1", "elsewhere"))),
    C("sweep: a cell path that is a dangling symlink", SW, "is a symbolic link",
      setup=S.link("sw/ce-ir20-s0", "nowhere")),
    C("sweep --collect: sweep.json {}", ["sweep", "--collect", "--out", "{ws}/sw"],
      "sweep.json is damaged (methods, imbalance, seeds: missing",
      setup=S.file("sw/sweep.json", "{}")),
    C("sweep: sweep.json {}", SW, "sweep.json is damaged (methods, imbalance, seeds",
      setup=S.file("sw/sweep.json", "{}")),
    C("sweep --collect: sweep.json imbalance 0", ["sweep", "--collect", "--out", "{ws}/sw"],
      "(imbalance: missing or not a list of factors in (0, 1])",
      setup=S.file("sw/sweep.json", '{"methods": ["ce"], "imbalance": [0], "seeds": [0]}')),
    # -------------------------------------------------------- ufm (tests/test_ufm_cli.py)
    *[C(f"ufm: {' '.join(a)}", ["ufm", *a], n) for a, n in UFM_BAD],
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalogue(case, tmp_path):
    outcome = run_case(case, tmp_path)
    verdict, why = judge(case, outcome)
    assert verdict == "good", f"{verdict}: {why}"


def test_catalogue_size():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    from ncollapse.cli import build_parser

    out, todo = {}, [build_parser()]
    while todo:
        p = todo.pop()
        out[p.prog] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    return out


def test_every_option_of_every_command_has_a_help_line():
    parsers = _all_parsers()
    assert {"ncollapse train", "ncollapse sweep", "ncollapse ufm phase"} <= set(parsers)
    for prog, p in parsers.items():
        assert p.description or prog == "ncollapse", prog
        for a in p._actions:
            if not isinstance(a, argparse._SubParsersAction):
                assert a.help and a.help.strip(), f"{prog} {a.option_strings or a.dest}: no help"
