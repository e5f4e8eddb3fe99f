"""The benchmark scripts' own logic (their timings are not tested: benchmarks print ratios
measured in one run, on one machine)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name in sys.modules:  # loaded by another test module (tests/test_figures.py)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a script's dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_time_ratio_only_between_runs_on_the_same_kind_of_device():
    tta = _load("time_to_accuracy")
    official = [{"device": "cpu", "wall_seconds": 15_000.0}]
    fast = [{"device": "cpu", "wall_seconds": 900.0}, {"device": "cpu", "wall_seconds": 1100.0}]
    ratio, note = tta.time_ratio(official, fast)
    assert ratio == pytest.approx(15.0) and "15.0x" in note
    gpu = [{"device": "cuda", "wall_seconds": 44.0}]
    ratio, note = tta.time_ratio(official, gpu)
    assert ratio is None
    assert "cpu" in note and "cuda" in note and "--official" in note
    ratio, note = tta.time_ratio(official, [{"device": "cpu"}])
    assert ratio is None and "no wall time" in note


def test_trained_runs_are_read_back_with_the_machine_they_ran_on(tmp_path):
    """Without --runs the script trains, then reads each run back like a --runs directory: the
    machine printed is the one the run recorded (here this CPU), and a finished run is found
    again rather than retrained."""
    from argparse import Namespace

    from ncollapse.provenance import cpu_info

    tta = _load("time_to_accuracy")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "name: tiny\nmethod: etf_dr\ndata: {name: digits, imbalance: 0.1}\n"
        "optim: {epochs: 1, warmup_epochs: 0, milestones: [], batch_size: 64}\n"
        "eval: {collapse_every: 0}\nrun: {tensorboard: false, amp: false}\n"
    )
    args = Namespace(out=str(tmp_path / "runs"), progress="none", threads=1, device=None)
    path = tta._train(str(recipe), 0, args, val=False)
    summary, name, machine = tta._finished(path)
    assert name == "tiny" and summary["epochs"] == 1
    assert machine == cpu_info()["model"]
    stamp = (Path(path) / "summary.json").stat().st_mtime_ns
    assert tta._train(str(recipe), 0, args, val=False) == path  # found, not retrained
    assert (Path(path) / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="not a finished run"):
        tta._finished(str(tmp_path))


def test_full_length_packs_an_unfinished_run_and_resumes_it_elsewhere(tmp_path, monkeypatch):
    """An unfinished run of the full-length grid travels as a pack: unpacked where its directory
    is missing, it resumes from its checkpoint to the weights of the uninterrupted run."""
    import torch

    import ncollapse

    fl = _load("full_length")
    over = ["optim.epochs=4", "run.threads=1", "run.tensorboard=false", "eval.collapse_every=0"]
    whole = ncollapse.train(overrides=over, out=tmp_path / "a", name="r", progress="none")
    from test_engine import cut_after_two_epochs

    part = tmp_path / "b" / "r"
    cut_after_two_epochs(
        monkeypatch, ncollapse.train, overrides=over, out=tmp_path / "b", name="r", progress="none"
    )
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2
    records = tmp_path / "records"
    assert fl.save_partial(whole.run_dir, records) is None  # finished: nothing to pack
    packed = fl.save_partial(part, records)
    assert packed == records / "partial" / "r.tar.gz"
    moved = tmp_path / "c" / "r"
    assert fl.restore_partial(moved, records)
    assert not fl.restore_partial(moved, records)  # never over an existing directory
    assert sorted(p.name for p in moved.iterdir()) == sorted(
        n for n in fl.PACKED if (part / n).is_file()
    )
    back = torch.load(moved / "checkpoint.pt", weights_only=False)
    assert back["epoch"] == ckpt["epoch"]
    resumed = ncollapse.train(resume=moved, progress="none")
    want = torch.load(whole.run_dir / "model.pt", weights_only=True)
    got = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(want[k], got[k]) for k in want)
    # the record names each start: the first, then the resume after epoch 2 (the same thread
    # count, which an exact resume needs: a record with several says so, in order)
    starts = fl._starts(json.loads((moved / "env.json").read_text()))
    assert [(s["after_epoch"], s["threads"]) for s in starts] == [(0, 1), (2, 1)]
    assert starts[0]["machine"] == starts[1]["machine"] != "unrecorded"
    assert fl._one_or_all([s["threads"] for s in starts]) == 1
    assert fl._one_or_all([1, 2, 1]) == [1, 2]
    assert fl._in_order(["AMD EPYC", "NVIDIA H100", "AMD EPYC"]) == "AMD EPYC, then NVIDIA H100"


def test_time_to_accuracy_reads_the_yardstick_the_docs_quote():
    """The official run's figures beside the fast recipe come from the fp32 record the docs'
    "official" group reads, not from the grid's seed 0, which full_length.py rewrites in the
    grid's own precision."""
    tta = _load("time_to_accuracy")
    figures = _load("figures")
    assert tta.OFFICIAL_RECORD.name == f"{figures.GROUPS['official']}.json"
    assert tta.OFFICIAL_RECORD.is_file()
    record = json.loads(tta.OFFICIAL_RECORD.read_text())
    stem = tta.OFFICIAL_RECORD.stem
    assert (record.get("precision") or figures.LEGACY_PRECISION.get(stem)) == "fp32"


def _tiny_grid(tmp_path, seeds=(0, 1)):
    """A grid of one-epoch digits runs in the shape of full_length.py's queue."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "name: tiny\nmethod: ce\ndata: {name: digits, imbalance: 0.1, val: unused}\n"
        "optim: {epochs: 1, warmup_epochs: 0, milestones: [], batch_size: 64}\n"
        "eval: {collapse_every: 0}\nrun: {tensorboard: false, amp: false}\n"
    )
    return [("ce", str(recipe), [], seed) for seed in seeds]


def _grid_args(**kw):
    from argparse import Namespace

    return Namespace(**{"threads": 1, "device": "cpu", "jobs": 1, "eval_batch": 128, **kw})


def test_full_length_jobs_train_each_run_once_with_a_log_each(tmp_path, capsys):
    """--jobs 2 trains the two runs side by side, each claimed by one worker: both records
    written (validation added), each run's output in its own log, no run trained twice."""
    fl = _load("full_length")
    out, records = tmp_path / "runs", tmp_path / "records"
    todo = _tiny_grid(tmp_path)
    assert fl.Grid(todo, _grid_args(jobs=2), out, records).run() == 0
    for seed in (0, 1):
        name = fl.run_name("ce", seed)
        record = json.loads((records / f"{name}.json").read_text())
        assert record["epochs"] == 1 and "val" in record
        log = (out / f"{name}.log").read_text()
        assert log.count("run directory:") == 1  # trained once, in its own log
    printed = capsys.readouterr().out
    assert printed.count("done, record") == 2 and printed.count("(log ") == 2
    assert fl.progress(out / fl.run_name("ce", 0)) == "epoch 1/1"
    assert fl.progress(out / "nothing") == ""
    assert record["starts"] == [
        {"after_epoch": 0, "threads": 1, "machine": record["machine"], "precision": "fp32"}
    ]
    # a run resumed on another machine with two threads: its record names both, in order
    run = out / fl.run_name("ce", 1)
    env = json.loads((run / "env.json").read_text())
    env["resumes"] = [
        {"after_epoch": 0, "step": 3, "steps": 4, "threads": 2, "cpu": None,
         "cuda_device": "NVIDIA H100", "precision": "bf16"}
    ]  # fmt: skip
    (run / "env.json").write_text(json.dumps(env))
    mixed = json.loads(fl.write_record(run, ["train"], records).read_text())
    assert mixed["threads"] == [1, 2] and mixed["precision"] == "fp32, then bf16"
    assert mixed["machine"] == f"{record['machine']}, then NVIDIA H100"
    assert mixed["starts"][1] == {
        "after_epoch": 0, "threads": 2, "step": 3, "steps": 4, "machine": "NVIDIA H100",
        "precision": "bf16",
    }  # fmt: skip


def test_full_length_queue_finishes_started_runs_before_new_ones(tmp_path):
    """The queue: CE and LA interleaved by seed, then the ETF + DR seeds, then LDAM-DRW; a run
    with a checkpoint or a packed partial goes first (a restarted grid finishes what it holds);
    a run already on record is left out unless --redo names it, and then comes last."""
    fl = _load("full_length")
    out, records = tmp_path / "runs", tmp_path / "records"
    names = [fl.run_name(m, s) for m, _, _, s in fl.queue(None, [0, 1], out, records)]
    assert names == [fl.run_name(m, s) for m, s in [
        ("ce", 0), ("la", 0), ("ce", 1), ("la", 1),
        ("etf_dr", 0), ("etf_dr", 1), ("ldam_drw", 0), ("ldam_drw", 1),
    ]]  # fmt: skip
    (records / "partial").mkdir(parents=True)
    (records / "partial" / f"{fl.run_name('ldam_drw', 1)}.tar.gz").write_bytes(b"")
    (out / fl.run_name("la", 1)).mkdir(parents=True)
    (out / fl.run_name("la", 1) / "checkpoint.pt").write_bytes(b"")
    for m, s in [("ce", 0), ("la", 0)]:
        (records / f"{fl.run_name(m, s)}.json").write_text("{}")
    names = [fl.run_name(m, s) for m, _, _, s in fl.queue(None, [0, 1], out, records)]
    assert names == [fl.run_name(m, s) for m, s in [
        ("la", 1), ("ldam_drw", 1), ("ce", 1), ("etf_dr", 0), ("etf_dr", 1), ("ldam_drw", 0),
    ]]  # fmt: skip
    redo = {fl.run_name("la", 0)}
    names = [fl.run_name(m, s) for m, _, _, s in fl.queue(None, [0, 1], out, records, redo)]
    assert names[-1] == fl.run_name("la", 0) and fl.run_name("ce", 0) not in names
    every = fl.queue(None, [0, 1], out, records, redo=None)  # --list: the whole grid
    assert len(every) == 8 and [m for m, *_ in every[-2:]] == ["ce", "la"]
    only = fl.queue(["etf_dr"], [2], out, records)
    assert [(m, s) for m, _, _, s in only] == [("etf_dr", 2)]


def test_full_length_never_retrains_a_run_on_record_unless_asked(tmp_path, capsys, monkeypatch):
    """A record written elsewhere (no run directory here) is not trained again: the grid has
    nothing to do and --list still shows the run; --redo trains it, and replaces its record;
    a malformed --redo is a usage error naming the form."""
    fl = _load("full_length")
    out, records = tmp_path / "runs", tmp_path / "records"
    name = fl.run_name("ce", 0)
    records.mkdir()
    (records / f"{name}.json").write_text('{"from": "another machine"}')
    where = ["--out", str(out), "--records", str(records), "--only", "ce", "--seeds", "0"]
    monkeypatch.setattr(fl, "METHODS", [("ce", _tiny_grid(tmp_path)[0][1], [])])  # one epoch
    assert fl.main(where) == 0
    assert not (out / name).exists()
    assert json.loads((records / f"{name}.json").read_text()) == {"from": "another machine"}
    fl.main(["--list", *where])
    assert capsys.readouterr().out.split() == [name, "new", "record", "written"]
    assert fl.main([*where, "--redo", "ce:0"]) == 0
    assert json.loads((records / f"{name}.json").read_text())["epochs"] == 1  # replaced
    capsys.readouterr()
    assert fl.main([*where, "--redo", "ce:0"]) == 0  # finished here too: kept, and said so
    assert "is finished and on record: move it away" in capsys.readouterr().err
    for bad in ("ce", "nope:0", "ce:x"):
        with pytest.raises(SystemExit) as stop:
            fl.main([*where, "--redo", bad])
        assert stop.value.code == 2
        assert "give METHOD:SEED" in capsys.readouterr().err


def test_full_length_skips_a_run_another_process_holds(tmp_path, capsys):
    """A run claimed elsewhere (a second invocation, another worker) is neither trained nor
    unpacked here, and --list says it is being trained."""
    fl = _load("full_length")
    out, records = tmp_path / "runs", tmp_path / "records"
    todo = _tiny_grid(tmp_path, seeds=(0,))
    name = fl.run_name("ce", 0)
    with fl.claim(out, name) as mine:
        assert mine
        with fl.claim(out, name) as again:
            assert not again  # a second claim, even in the same process, is refused
        assert fl.Grid(todo, _grid_args(), out, records).run() == 0
        assert not (out / name).exists() and not (records / f"{name}.json").exists()
        fl.main(["--list", "--only", "ce", "--seeds", "0", "--out", str(out),
                 "--records", str(records)])  # fmt: skip
        listed = [ln.split() for ln in capsys.readouterr().out.splitlines()]
        assert [name, "training"] in listed
    with fl.claim(out, name) as mine:
        assert mine  # released with the block


def test_full_length_passes_a_stop_on_to_its_runs(tmp_path):
    """SIGTERM to the script reaches the training processes (which checkpoint and stop), and
    no further run starts: the grid ends with the signal's status."""
    import signal
    import subprocess

    fl = _load("full_length")
    grid = fl.Grid(_tiny_grid(tmp_path), _grid_args(), tmp_path / "runs", tmp_path / "records")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    grid.children.add(child)
    grid._stop(signal.SIGTERM, None)
    assert child.wait(timeout=10) == -signal.SIGTERM
    assert grid.work(separate_logs=False) == 128 + signal.SIGTERM
    assert not (tmp_path / "runs" / fl.run_name("ce", 0)).exists()


def test_full_length_refuses_jobs_with_pack(capsys):
    fl = _load("full_length")
    with pytest.raises(SystemExit):
        fl.main(["--jobs", "2", "--pack", "2"])
    assert "give one of them" in capsys.readouterr().err


def test_eval_batch_times_the_trainers_evaluation_at_each_size(monkeypatch):
    """benchmarks/eval_batch.py times ``Trainer.evaluate`` (the pass a run makes) once per
    repeat at each batch size, over the images asked for, and rates them against batch 512."""
    eb = _load("eval_batch")
    from ncollapse.engine.loop import Trainer

    seen = []
    original = Trainer.evaluate

    def spy(self, epoch):
        seen.append(self.eval_cfg.batch_size)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    from argparse import Namespace

    args = Namespace(device="cpu", threads=1, synthetic=True, repeats=1, images=40)
    result = eb.measure(args)
    assert result["images_per_pass"] == 40
    # each trainer: a warm-up pass and a timed pass per repeat, both networks
    assert sorted(seen) == sorted(list(eb.SIZES) * 2 * 2)
    for net in eb.RECIPES:
        rates = result["images_per_s"][net]
        assert set(rates) == {f"batch_{bs}" for bs in eb.SIZES}
        assert all(v > 0 for v in rates.values())
        ratios = result["ratio_vs_512"][net]
        assert ratios["batch_512"] == 1.0
        assert ratios["batch_128"] == rates["batch_128"] / rates["batch_512"]


def test_conv_grad_order_measures_rounding_not_a_different_sum(capsys):
    """benchmarks/conv_grad_order.py: in float64 the whole batch's weight gradient and the sum of
    its halves agree to rounding (the same sum), so what it reports in float32 is rounding: small,
    and not zero against float64."""
    import torch

    cgo = _load("conv_grad_order")
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(6, 3, 8, 8, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    dy = torch.randn(6, 4, 8, 8, generator=g)
    whole = cgo.weight_grad(x, w, dy, torch.float64)
    halves = cgo.weight_grad(x[:3], w, dy[:3], torch.float64)
    halves = halves + cgo.weight_grad(x[3:], w, dy[3:], torch.float64)
    assert torch.allclose(whole, halves, rtol=0, atol=1e-12 * whole.abs().max().item())
    r = cgo.measure(16)
    assert set(r) == {"whole", "halves", "whole_vs_halves"}
    assert r["whole"] > 0 and all(0 <= v < 1e-3 for v in r.values())  # 0: the same order
    assert cgo.main(["--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU ") and "whole vs halves" in out
    with pytest.raises(SystemExit):
        cgo.main(["--batch", "1"])
