"""Data-parallel pieces that need no process group: shards of the global batch, the exact merge
of collapse statistics across ranks (ranks simulated by threads), the read-only run directory of
the other ranks, the checks. The torchrun runs themselves are in test_distributed_torchrun.py."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from ncollapse.criterion import Criterion
from ncollapse.data.augment import make_augment
from ncollapse.engine.batches import ResidentBatches
from ncollapse.engine.distributed import (
    SINGLE,
    Distributed,
    ReadOnlyRun,
    exit_process,
    is_main_process,
    shard_bounds,
    shard_sizes,
    torchrun_env,
)
from ncollapse.engine.evaluate import Evaluator
from ncollapse.engine.sources import ShardedBatches, StreamingBatches, steps_per_epoch
from ncollapse.engine.step import sees_global_batch
from ncollapse.errors import UserError
from ncollapse.metrics import CollapseAccumulator
from ncollapse.rundir import Run


@dataclasses.dataclass(frozen=True)
class ThreadRank(Distributed):
    """A rank simulated by a thread: the collectives meet at a shared barrier."""

    hub: object = None

    def all_reduce_sum(self, t):
        return self.hub.exchange(self.rank, t, lambda ts: sum(x.double() for x in ts).to(t.dtype))

    def gather_rows(self, t):
        return self.hub.exchange(self.rank, t, torch.cat)

    def all_gather_object(self, obj):
        return self.hub.exchange(self.rank, obj, list)


class Hub:
    def __init__(self, world):
        self.world = world
        self.barrier = threading.Barrier(world)
        self.slots: list = [None] * world

    def exchange(self, rank, value, combine):
        self.slots[rank] = value
        self.barrier.wait()
        out = combine(list(self.slots))
        self.barrier.wait()
        return out


def run_ranks(world, fn):
    """``fn(dist)`` on ``world`` simulated ranks; their results in rank order."""
    hub = Hub(world)
    results: list = [None] * world
    errors: list = []

    def body(r):
        try:
            results[r] = fn(ThreadRank(rank=r, world_size=world, local_rank=r, hub=hub))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            hub.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return results


def test_shards_are_contiguous_and_cover_the_batch():
    assert shard_sizes(64, 2) == [32, 32] and shard_sizes(27, 2) == [13, 14]
    assert shard_sizes(10, 4) == [2, 3, 2, 3]
    bounds = [shard_bounds(27, 2, r) for r in range(2)]
    assert bounds == [(0, 13), (13, 27)]
    # a last batch that would leave a rank fewer than 2 samples is skipped
    assert steps_per_epoch(411, 64, SINGLE) == 7
    assert steps_per_epoch(411, 64, Distributed(0, 2)) == 7  # tail 27
    assert steps_per_epoch(387, 64, Distributed(0, 2)) == 6  # tail 3 < 2 * 2
    assert steps_per_epoch(387, 64, SINGLE) == 7


def test_torchrun_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (1, 4, 1)


def test_only_rank_0_is_the_main_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert is_main_process()  # no torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, main in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert is_main_process() is main


def test_exit_process_returns_without_a_process_group():
    """One process (no torchrun): the command exits the usual way, and tests may call main()."""
    assert exit_process(3) is None


def test_the_console_script_exits_through_exit_process(monkeypatch):
    import ncollapse.cli as cli
    import ncollapse.engine.distributed as distributed

    seen = []
    monkeypatch.setattr(cli, "main", lambda: 7)
    monkeypatch.setattr(distributed, "exit_process", seen.append)
    with pytest.raises(SystemExit) as exc:
        cli.run()
    assert seen == [7] and exc.value.code == 7


@pytest.mark.parametrize("command", ["train", "compare"])
def test_commands_print_their_results_on_rank_0_only(monkeypatch, tmp_path, capsys, command):
    """Under torchrun every rank runs the command; only rank 0 prints the summary (the
    torchrun test counts the lines of a real two-process run)."""
    from ncollapse.cli import main
    from ncollapse.engine import distributed

    argv = [
        command,
        "--epochs",
        "1",
        "--set",
        "run.progress=none",
        "--set",
        "run.tensorboard=false",
    ]
    argv += ["--set", "optim.milestones=[]", "--set", "optim.warmup_epochs=0"]
    for rank, main_rank in ((1, False), (0, True)):
        monkeypatch.setattr(distributed, "is_main_process", lambda m=main_rank: m)
        assert main([*argv, "--out", str(tmp_path / str(rank))]) == 0
        out = capsys.readouterr().out
        assert ("accuracy" in out) is main_rank, out


def _resident(n=54, batch=16, extra=False):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 5
    weights = {"reversed": torch.ones(n)} if extra else None
    aug = make_augment("standard", (0.5,), (0.25,))
    return ResidentBatches(images, labels, aug, batch_size=batch, extra_weights=weights)


@pytest.mark.parametrize("mixup", [0.0, 1.0])
def test_sharded_steps_put_together_are_the_global_steps(mixup):
    whole = list(_resident(extra=True).epoch(3, 7, mixup))
    shards = [
        list(ShardedBatches(_resident(extra=True), Distributed(r, 2)).epoch(3, 7, mixup))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 4  # 16, 16, 16, 6
    for g, a, b in zip(whole, *shards):
        assert a.size == b.size == g.size and a.shards == b.shards == shard_sizes(g.size, 2)
        assert torch.equal(torch.cat([a.x, b.x]), g.x)
        assert torch.equal(torch.cat([a.batch.y, b.batch.y]), g.batch.y)
        assert torch.equal(torch.cat([a.batch.y_b, b.batch.y_b]), g.batch.y_b)
        assert a.batch.lam == b.batch.lam == g.batch.lam
        assert torch.equal(a.whole.y, g.batch.y) and torch.equal(a.whole.y_b, g.batch.y_b)
        ex = g.extra["reversed"]
        assert torch.equal(torch.cat([a.extra["reversed"][0], b.extra["reversed"][0]]), ex[0])
        assert torch.equal(a.whole_extra["reversed"], ex[1])


def test_global_batch_must_split_evenly():
    from ncollapse.engine.sources import _check_global_batch

    _check_global_batch(64, Distributed(0, 2))
    with pytest.raises(UserError, match="divisible by 3.*batch_size=63"):
        _check_global_batch(64, Distributed(0, 3))
    _check_global_batch(4, Distributed(0, 2))  # two samples a process: BatchNorm trains
    with pytest.raises(UserError, match="leaves each of the 2 processes 1 sample.*batch_size=4"):
        _check_global_batch(2, Distributed(0, 2))


class _FakeStream:
    """A streaming dataset whose sample i is an image filled with i (to read the order back)."""

    resident = False

    def __init__(self, n, classes=4):
        self.labels = torch.arange(n) % classes
        self.classes = [str(c) for c in range(classes)]

    def __len__(self):
        return len(self.labels)

    def view(self, train, seed, epoch):
        return self

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), int(self.labels[i])


def _stream(ds, rank=None, batch=8):
    dist = SINGLE if rank is None else Distributed(rank, 2)
    return StreamingBatches(ds, batch_size=batch, workers=0, device=torch.device("cpu"), dist=dist)


def test_streaming_shards_hold_the_global_batch():
    ds = _FakeStream(37)  # 4 batches of 8, then 5 (shares of 2 and 3)
    one = list(_stream(ds).epoch(0, 5, 0.0))
    two = [list(_stream(ds, r).epoch(0, 5, 0.0)) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 5
    for g, a, b in zip(one, *two):
        assert torch.equal(torch.cat([a.x, b.x]), g.x)  # each rank loaded only its share
        assert torch.equal(a.whole.y, g.batch.y) and torch.equal(b.whole.y, g.batch.y)
        assert a.shards == b.shards == shard_sizes(g.size, 2)
    with pytest.raises(UserError, match="divisible"):
        _stream(ds, 0, batch=9)


def test_streaming_mixup_pairs_within_a_share():
    ds = _FakeStream(37)
    plain = [list(_stream(ds, r).epoch(1, 5, 0.0)) for r in range(2)]
    mixed = [list(_stream(ds, r).epoch(1, 5, 1.0)) for r in range(2)]
    for (pa, pb), (a, b) in zip(zip(*plain), zip(*mixed)):
        lam = a.batch.lam
        assert lam == b.batch.lam and 0.0 < lam < 1.0  # one coefficient per global batch
        n = a.shards[0]
        assert torch.equal(a.whole.y_b[:n], a.batch.y_b) and torch.equal(
            b.whole.y_b[n:], b.batch.y_b
        )
        for p, m in ((pa, a), (pb, b)):
            own = p.x.flatten(1)[:, 0]
            partner = (m.x.flatten(1)[:, 0] - lam * own) / (1 - lam)
            assert torch.allclose(partner.sort().values, own.sort().values, atol=1e-3)


def test_collapse_statistics_merge_exactly_across_ranks():
    g = torch.Generator().manual_seed(1)
    k, d, n = 6, 9, 301
    feats = torch.randn(n, d, generator=g) * 3 + 5  # offset: cancellation would show
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    w = torch.randn(k, d, generator=g)
    ev = Evaluator([10, 8, 6, 4, 2, 1])

    def batches(lo, hi, size=32):
        return lambda: (
            (
                feats[i : min(i + size, hi)],
                logits[i : min(i + size, hi)],
                labels[i : min(i + size, hi)],
            )
            for i in range(lo, hi, size)
        )

    one, acc1 = ev.collapse(batches(0, n, 50), w, None)
    acc_one = ev.accuracy(batches(0, n)())

    def rank(dist):
        lo, hi = shard_bounds(n, dist.world_size, dist.rank)
        values, acc = ev.collapse(batches(lo, hi), w, None, dist=dist)
        return values, acc, ev.accuracy(batches(lo, hi)(), dist=dist)

    for world in (2, 3):
        out = run_ranks(world, rank)
        for values, acc, accuracy in out:
            assert accuracy == acc_one
            assert torch.allclose(acc.counts, acc1.counts, rtol=0, atol=0)
            assert torch.allclose(acc.means, acc1.means, rtol=1e-13, atol=1e-13)
            assert torch.allclose(acc.scatter, acc1.scatter, rtol=1e-12, atol=1e-10)
            assert torch.allclose(acc.class_ss, acc1.class_ss, rtol=1e-12, atol=1e-10)
            assert values.keys() == one.keys()
            for key, v in one.items():
                assert values[key] == pytest.approx(v, rel=1e-9, abs=1e-12), key


def test_a_rank_without_samples_still_merges():
    feats, labels = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 1])

    def rank(dist):
        acc = CollapseAccumulator(2, 4)
        if dist.rank == 0:
            acc.update(feats, labels)
        from ncollapse.engine.evaluate import merge_statistics

        merge_statistics(acc, dist)
        return acc

    a, b = run_ranks(2, rank)
    ref = CollapseAccumulator(2, 4)
    ref.update(feats, labels)
    assert torch.equal(a.counts, ref.counts) and torch.allclose(b.scatter, ref.scatter)


def test_other_ranks_never_write(tmp_path):
    run = Run.create(tmp_path, "r", explicit=True)
    ro = ReadOnlyRun(run)
    ro.write_config({"a": 1})
    ro.write_summary({})
    ro.append_metrics({"epoch": 1, "kind": "train"})
    ro.save_checkpoint({"x": 1})
    ro.save_model({})
    ro.truncate_metrics(0)
    ro.save_collapse_state(None)
    assert list(run.path.iterdir()) == []
    assert ro.path == run.path and ro.metrics() == [] and ro.writes is False


class _Stateful(Criterion):
    def state_dict(self):
        return {"memory": torch.zeros(1)}


def test_which_batch_the_loss_sees():
    two = Distributed(0, 2)
    assert not sees_global_batch("global", Criterion(), SINGLE)
    assert not sees_global_batch("auto", Criterion(), two)
    assert sees_global_batch("global", Criterion(), two)
    assert sees_global_batch("auto", _Stateful(), two)
    with pytest.raises(UserError, match="drift apart"):
        sees_global_batch("local", _Stateful(), two)


def test_loss_batch_option_is_checked():
    from ncollapse.composition import compose
    from ncollapse.errors import ConfigError

    assert compose(overrides=["run.loss_batch=global", "run.sync_bn=true"]).run.sync_bn
    with pytest.raises(ConfigError, match="run.loss_batch"):
        compose(overrides=["run.loss_batch=whole"])
