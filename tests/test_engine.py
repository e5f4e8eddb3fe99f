"""The engine: schedule, mixup, TensorBoard files, run directories, checkpoints and exact resume."""

import itertools
import json

import numpy as np
import pytest
import torch

from ncollapse.build import build_network
from ncollapse.composition import compose
from ncollapse.engine import lr_at_epoch
from ncollapse.engine.loop import Trainer, epoch_generators
from ncollapse.engine.mixup import mixup_batch
from ncollapse.engine.tensorboard import EventWriter, crc32c, read_scalars
from ncollapse.errors import ConfigError, UserError
from ncollapse.rundir import Run as RunDir
from ncollapse.rundir import read_metrics
from ncollapse.runner import run_training


def test_official_schedule():
    lrs = [lr_at_epoch(e, 0.1) for e in range(200)]
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5] == pytest.approx(0.1) and lrs[159] == pytest.approx(0.1)
    assert lrs[160] == pytest.approx(0.01) and lrs[179] == pytest.approx(0.01)
    assert lrs[180] == pytest.approx(0.001) and lrs[199] == pytest.approx(0.001)
    assert lr_at_epoch(0, 0.1, warmup_epochs=0, milestones=[1]) == pytest.approx(0.1)


def test_fractional_warmup_ramps_per_batch():
    """A shortened schedule keeps its warm-up as a fraction of an epoch (5/200 of 20 epochs is
    0.5): the rate rises with every batch and reaches the base rate half-way through epoch 0."""
    lr = [lr_at_epoch(0, 0.1, 0.5, [16, 18], progress=(b + 1) / 10) for b in range(10)]
    assert lr == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert lr_at_epoch(1, 0.1, 0.5, [16, 18]) == pytest.approx(0.1)
    # 1.5 epochs: epoch 0 ramps to 2/3 of the rate, epoch 1 finishes the ramp
    assert lr_at_epoch(0, 0.3, 1.5, [9], progress=1.0) == pytest.approx(0.2)
    assert lr_at_epoch(1, 0.3, 1.5, [9], progress=0.25) == pytest.approx(0.25)
    assert lr_at_epoch(1, 0.3, 1.5, [9], progress=1.0) == pytest.approx(0.3)
    # whole epochs keep the official once-per-epoch steps, whatever the progress
    assert lr_at_epoch(0, 0.1, 5, progress=0.1) == pytest.approx(0.02)


def test_mixup_is_a_convex_combination_and_off_at_zero():
    g, rng = epoch_generators(0, 0)
    x = torch.randn(8, 3)
    y = torch.arange(8)
    xm, ya, yb, lam = mixup_batch(x, y, 1.0, g, rng)
    assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
    perm = yb  # labels are the indices, so y_b is the permutation itself
    assert torch.allclose(xm, lam * x + (1 - lam) * x[perm])
    x2, _ya2, yb2, lam2 = mixup_batch(x, y, 0.0, g, rng)
    assert lam2 == 1.0 and x2 is x and torch.equal(yb2, y)


def test_epoch_generators_depend_only_on_seed_and_epoch():
    a = torch.randperm(10, generator=epoch_generators(1, 3)[0])
    b = torch.randperm(10, generator=epoch_generators(1, 3)[0])
    c = torch.randperm(10, generator=epoch_generators(1, 4)[0])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tensorboard_event_file_round_trip(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    w = EventWriter(tmp_path)
    w.add_scalar("train/loss", 0.5, 1)
    w.add_scalars("eval_test", {"acc": 0.75, "per_class": [1, 2], "few": None}, 2)
    w.close()
    assert w.path.name.startswith("events.out.tfevents.")
    assert read_scalars(w.path) == [("train/loss", 1, 0.5), ("eval_test/acc", 2, 0.75)]


def test_rundir_never_overwrites(tmp_path):
    a = RunDir.create(tmp_path, "x", explicit=False)
    a.write_summary({"acc": 1.0})
    b = RunDir.create(tmp_path, "x", explicit=False)
    assert b.path.name == "x-2" and (a.path / "summary.json").exists()
    with pytest.raises(UserError, match="--resume"):
        RunDir.create(tmp_path, "x", explicit=True)


def test_metrics_reader_skips_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1, "kind": "train"}\n{"epoch": 2, "ki')
    assert read_metrics(p) == [{"epoch": 1, "kind": "train"}]


def test_etf_too_narrow_names_the_width_option():
    cfg = compose("cifar10_lt", overrides=["model.backbone=resnet32", "model.head=etf"])
    with pytest.raises(ConfigError) as info:
        build_network(cfg, num_classes=100, in_channels=3)
    assert "no simplex ETF" in str(info.value) and "model.width=2" in str(info.value)
    assert build_network(
        compose("cifar10_lt", overrides=["model.width=2"]), 100, 3
    ).head.frame.shape == (
        128,
        100,
    )


def _digits_cfg(tmp_path, epochs=4, **over):
    sets = [
        f"run.out_dir={tmp_path}",
        "run.progress=none",
        "run.tensorboard=true",
        f"optim.epochs={epochs}",
    ]
    sets += ["optim.milestones=[2,3]", "optim.warmup_epochs=1"]
    sets += [f"{k}={v}" for k, v in over.items()]  # the test's own settings win
    return compose(overrides=sets)


def test_etf_frame_unchanged_by_training_and_saved(tmp_path):
    cfg = _digits_cfg(tmp_path, epochs=2, **{"run.name": "frame"})
    res = run_training(cfg)
    torch.manual_seed(cfg.seed)
    fresh = build_network(cfg, 10, 1)
    state = torch.load(res.run_dir / "model.pt")
    assert torch.equal(state["head.frame"], fresh.head.frame)  # same frame after training
    ckpt = torch.load(res.run_dir / "checkpoint.pt", weights_only=False)
    assert torch.equal(ckpt["model"]["head.frame"], fresh.head.frame)
    # the run directory holds everything the docs promise
    for name in (
        "config.yaml",
        "data.json",
        "env.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoint.pt",
        "model.pt",
    ):
        assert (res.run_dir / name).is_file(), name
    data = json.loads((res.run_dir / "data.json").read_text())
    assert data["seeds"] == {"seed": 0, "subset_seed": 0, "etf_seed": 0}
    assert sum(data["class_counts"]) == data["num_train"]
    kinds = {r["kind"] for r in read_metrics(res.run_dir / "metrics.jsonl")}
    assert kinds == {"train", "eval", "collapse"}
    assert list((res.run_dir / "tb").glob("events.out.tfevents.*"))
    tb = read_scalars(next((res.run_dir / "tb").glob("events.out.tfevents.*")))
    assert ("train/loss", 1) in {(t, s) for t, s, _ in tb}


class _Killed(Exception):
    pass


def cut_after_two_epochs(monkeypatch, train, *args, **kwargs):
    """``train(*args, **kwargs)``, killed while running the third epoch, after epoch 2's
    checkpoint."""
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == 2:
            raise _Killed
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    with pytest.raises(_Killed):
        train(*args, **kwargs)
    monkeypatch.setattr(Trainer, "train_epoch", original)


@pytest.mark.parametrize("mixup", [0.0, 1.0])
def test_resume_after_kill_matches_uninterrupted(tmp_path, monkeypatch, mixup):
    over = {"optim.mixup_alpha": mixup, "data.augment": "standard"}
    full = run_training(_digits_cfg(tmp_path / "a", **over, **{"run.name": "full"}))
    cut_after_two_epochs(
        monkeypatch, run_training, _digits_cfg(tmp_path / "b", **over, **{"run.name": "cut"})
    )
    run_dir = tmp_path / "b" / "cut"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch"] == 2
    resumed = run_training(resume=run_dir)

    ma = [r for r in read_metrics(full.run_dir / "metrics.jsonl") if r["kind"] != "train"]
    mb = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] != "train"]
    assert ma == mb  # every eval and collapse record, epochs 1-4, identical
    la = [r["loss"] for r in read_metrics(full.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert la == lb and len(la) == 4
    sa, sb = torch.load(full.run_dir / "model.pt"), torch.load(run_dir / "model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed.summary["final"] == full.summary["final"]
    # times add up across the kill: the summary counts all four epochs, not just the last two
    times = [r["seconds"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert resumed.summary["train_seconds"] == pytest.approx(sum(times))
    assert resumed.summary["wall_seconds"] >= resumed.summary["train_seconds"]


def test_resume_of_a_run_saved_before_a_config_key_existed(tmp_path):
    import yaml

    cfg = _digits_cfg(tmp_path, epochs=1, **{"run.name": "old"})
    res = run_training(cfg)
    path = res.run_dir / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["loss"]["drw"]  # as written by a version without deferred re-weighting switch
    path.write_text(yaml.safe_dump(saved))
    again = run_training(cfg, resume=res.run_dir)  # the same config: accepted, nothing to do
    assert again.summary["final"] == res.summary["final"]
    saved["loss"]["no_such_key"] = 1
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="no_such_key"):
        run_training(cfg, resume=res.run_dir)


#: what a checkpoint holds, and its trainer state, as every version since format 2 writes them
CHECKPOINT_V2 = {
    "format",
    "epoch",
    "model",
    "optimizer",
    "scaler",
    "criterion",
    "ema",
    "trainer",
    "rng",
}
TRAINER_V2 = {"best_acc", "best_epoch", "train_seconds", "wall_seconds", "first_loss"}
#: config keys added after format 2 (optimisers by name, gradient clipping): absent from the
#: config.yaml of a run written before them
ADDED_SINCE = {"optim": ["optimizer", "grad_clip", "betas", "eps"]}


def test_a_run_directory_of_the_previous_format_resumes_exactly(tmp_path, monkeypatch):
    """A run written before the optimiser and clipping keys existed (its config.yaml lacks
    them), stopped after epoch 2, resumes to the weights of the uninterrupted run; the
    checkpoint's keys are those of format 2, which the long runs on disk were written in."""
    import yaml

    over = {"optim.ema": 0.9, "optim.mixup_alpha": 1.0, "data.augment": "standard"}
    full = run_training(_digits_cfg(tmp_path / "a", **over, **{"run.name": "full"}))
    cut_after_two_epochs(
        monkeypatch, run_training, _digits_cfg(tmp_path / "b", **over, **{"run.name": "old"})
    )
    run_dir = tmp_path / "b" / "old"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert set(ckpt) == CHECKPOINT_V2 and ckpt["format"] == 2 and ckpt["epoch"] == 2
    assert set(ckpt["trainer"]) == TRAINER_V2 and ckpt["ema"]["updates"] > 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for section, keys in ADDED_SINCE.items():
        for key in keys:
            del saved[section][key]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    resumed = run_training(resume=run_dir)
    sa, sb = torch.load(full.run_dir / "model.pt"), torch.load(run_dir / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ma = [r for r in read_metrics(full.run_dir / "metrics.jsonl") if r["kind"] != "train"]
    mb = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] != "train"]
    assert ma == mb and resumed.summary["final"] == full.summary["final"]
    assert resumed.summary["weights"] == "average"


def test_resume_refuses_a_different_config(tmp_path):
    cfg = _digits_cfg(tmp_path, epochs=1, **{"run.name": "r"})
    res = run_training(cfg)
    other = _digits_cfg(tmp_path, epochs=1, **{"run.name": "r", "optim.lr": 0.05})
    with pytest.raises(UserError) as info:
        run_training(other, resume=res.run_dir)
    assert "optim.lr: 0.1 -> 0.05" in str(info.value)


def test_diverging_loss_is_a_clear_error(tmp_path):
    cfg = _digits_cfg(
        tmp_path, epochs=1, **{"optim.lr": 1e12, "model.head": "linear", "loss.name": "ce"}
    )
    with pytest.raises(UserError, match="lower optim.lr"):
        run_training(cfg)


def test_posthoc_adjustment_changes_predictions_only_at_eval(tmp_path):
    base = {"model.head": "linear", "loss.name": "ce", "run.name": "p0"}
    a = run_training(_digits_cfg(tmp_path, epochs=1, **base))
    b = run_training(
        _digits_cfg(tmp_path, epochs=1, **{**base, "run.name": "p1", "loss.posthoc_tau": 1.0})
    )
    la = [r["loss"] for r in read_metrics(a.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r["loss"] for r in read_metrics(b.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert la == lb
    assert np.isfinite(b.summary["final"]["acc"])


def test_collapse_splits_option(tmp_path):
    cfg = _digits_cfg(tmp_path, epochs=1, **{"eval.collapse_splits": "[train]"})
    res = run_training(cfg)
    splits = {
        r["split"] for r in read_metrics(res.run_dir / "metrics.jsonl") if r["kind"] == "collapse"
    }
    assert splits == {"train"} and set(res.summary["collapse"]) == {"train"}
    with pytest.raises(ConfigError, match="collapse_splits"):
        _digits_cfg(tmp_path, epochs=1, **{"eval.collapse_splits": "[valid]"})


def test_ldam_drw_preset_trains_and_switches_drw_on(tmp_path):
    """LDAM-DRW as the sweep runs it: cosine head, margins and scale 30, DRW at the first decay.
    (On a plain linear head the same constants diverge: about 19% accuracy on digits.)"""
    from ncollapse.build import build_criterion
    from ncollapse.composition import compose
    from ncollapse.losses import drw_weights

    cfg = compose(
        method="ldam_drw",
        overrides=[
            f"run.out_dir={tmp_path}",
            "run.progress=none",
            "run.tensorboard=false",
            "eval.every=30",
            "eval.collapse_splits=[train]",
        ],
    )
    assert cfg.model.head == "cosine" and cfg.loss.name == "ldam"
    counts = [122, 87, 62, 44, 32, 23, 16, 11, 8, 6]
    crit = build_criterion(cfg, build_network(cfg, 10, 1), counts)
    crit.set_epoch(23)
    assert crit.loss.weight is None
    crit.set_epoch(24)  # 0-based epoch 24 = the first lr milestone of the digits schedule
    assert torch.allclose(crit.loss.weight, drw_weights(counts))
    res = run_training(cfg)
    final = res.summary["final"]
    assert final["acc"] > 0.9, final  # CE on the same data: about 0.93
    assert final["few"] > 0.8, final


def test_engine_ramps_a_fractional_warmup_per_batch(tmp_path, monkeypatch):
    from ncollapse.engine.loop import Trainer

    seen: list[tuple[int, float]] = []
    original = Trainer._set_lr

    def spy(self, epoch, progress=1.0):
        lr = original(self, epoch, progress)
        seen.append((epoch, self.optimizer.param_groups[0]["lr"]))
        return lr

    monkeypatch.setattr(Trainer, "_set_lr", spy)
    cfg = _digits_cfg(tmp_path, epochs=2, **{"run.name": "warm", "optim.warmup_epochs": 0.5})
    res = run_training(cfg)
    epoch0 = [lr for e, lr in seen if e == 0]
    batches = -(-sum(json.loads((res.run_dir / "data.json").read_text())["class_counts"]) // 64)
    assert len(epoch0) == 1 + batches  # once at the start, then before every batch
    ramp = epoch0[1:]
    assert ramp[0] == pytest.approx(0.1 * 2 / batches) and max(ramp) == pytest.approx(0.1)
    assert all(b >= a for a, b in itertools.pairwise(ramp)) and ramp[len(ramp) // 2 - 1] < 0.1
    assert [lr for e, lr in seen if e == 1] == [pytest.approx(0.1)]  # whole epochs: once


def test_a_last_batch_of_one_sample_is_skipped_not_a_crash(tmp_path):
    """BatchNorm (the ETF head's BatchNorm1d) cannot train on one sample: with n = k * batch + 1
    training images the single last sample is left out of that epoch instead of crashing."""
    from ncollapse.data import load_data
    from ncollapse.engine.distributed import Distributed
    from ncollapse.engine.sources import steps_per_epoch

    one = Distributed()  # one process
    assert [steps_per_epoch(n, 8, one) for n in (16, 17, 18, 1)] == [2, 2, 3, 1]
    cfg = _digits_cfg(tmp_path, epochs=1)
    n = load_data(cfg.data).train.labels.numel()
    cfg = _digits_cfg(tmp_path, epochs=1, **{"optim.batch_size": n - 1, "run.name": "tail1"})
    res = run_training(cfg)
    assert res.summary["final"]["acc"] >= 0
    first = next(r for r in read_metrics(res.run_dir / "metrics.jsonl") if r["kind"] == "train")
    assert first["epoch"] == 1


def test_adamw_and_gradient_clipping_are_options(tmp_path, monkeypatch):
    clipped = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        norm = real(params, max_norm, *args, **kwargs)
        clipped.append((max_norm, float(norm)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    over = {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.grad_clip": 0.5}
    res = run_training(_digits_cfg(tmp_path, epochs=1, **over, **{"run.name": "adamw"}))
    batches = -(-sum(json.loads((res.run_dir / "data.json").read_text())["class_counts"]) // 64)
    assert len(clipped) == batches and {m for m, _ in clipped} == {0.5}
    assert max(n for _, n in clipped) > 0.5  # the gradients it was given were larger
    ckpt = torch.load(res.run_dir / "checkpoint.pt", weights_only=False)
    assert "exp_avg_sq" in next(iter(ckpt["optimizer"]["state"].values()))  # Adam's moments
    assert np.isfinite(res.summary["final"]["acc"])
    with pytest.raises(ConfigError, match="optim.betas"):
        compose(overrides=["optim.optimizer=adamw", "optim.betas=[0.9]"])
    with pytest.raises(ConfigError, match="optim.grad_clip"):
        compose(overrides=["optim.grad_clip=0"])
