"""``ncollapse sweep``: the grid, results tables, resumability, grid changes, input errors, and the
method recipes in configs/.

One real sweep (digits, 2 methods x 2 seeds x 1 epoch) is shared by the tests that need real
summaries; the rest replace ``run_training`` by a fake that writes a run directory instantly.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import ncollapse.runner as runner_mod
from ncollapse.cli import main
from ncollapse.composition import compose
from ncollapse.config import config_to_dict
from ncollapse.errors import UserError
from ncollapse.losses import drw_start
from ncollapse.methods import METHODS
from ncollapse.rundir import Run as RunDir
from ncollapse.sweep import (
    COLLAPSE_KEYS,
    SweepSpec,
    cell_name,
    parse_imbalance,
    parse_ratios,
    run_sweep,
    write_results,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--set", "run.tensorboard=false", "--set", "run.progress=none", "--set", "run.threads=1"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ one real sweep


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "sw"
    rc = main(
        [
            "sweep",
            "--methods",
            "ce,etf_dr",
            "--ratio",
            "50",
            "--seeds",
            "0,1",
            "--epochs",
            "1",
            "--out",
            str(out),
            *QUIET,
        ]
    )
    assert rc == 0
    return out


def test_real_sweep_layout_and_stats(real_sweep):
    out = real_sweep
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["imbalance"] == [0.02] and spec["imbalance_ratio"] == ["50"]
    assert spec["subset_seed"] == 0 and spec["epochs"] == 1
    names = {p.name for p in out.iterdir() if p.is_dir()}
    assert names == {"ce-ir50-s0", "ce-ir50-s1", "etf_dr-ir50-s0", "etf_dr-ir50-s1"}
    # every run trained on the same subset, with its own training seed
    counts = {
        json.dumps(json.loads((out / n / "data.json").read_text())["class_counts"]) for n in names
    }
    assert len(counts) == 1
    for n in names:
        seeds = json.loads((out / n / "data.json").read_text())["seeds"]
        assert seeds["seed"] == int(n[-1]) and seeds["subset_seed"] == 0

    rows = _read_csv(out / "results.csv")
    assert [(r["method"], r["ratio"], r["n"]) for r in rows] == [
        ("ce", "50", "2"),
        ("etf_dr", "50", "2"),
    ]
    for row in rows:
        summaries = [
            json.loads((out / f"{row['method']}-ir50-s{s}" / "summary.json").read_text())
            for s in (0, 1)
        ]
        for key in ("acc", "many", "medium", "few", "many_idx", "medium_idx", "few_idx"):
            vals = [s["final"][key] for s in summaries]
            if any(v is None for v in vals):
                assert key in ("medium", "few"), key  # the index split is never empty
                continue
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(vals))
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(vals), abs=1e-12)
        for key in COLLAPSE_KEYS:
            vals = [s["collapse"]["train"][key] for s in summaries]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(vals))
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(vals), abs=1e-12)
        for key in ("train_seconds", "wall_seconds"):
            vals = [s[key] for s in summaries]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(vals))
        for summ in summaries:  # the whole run includes its training time
            assert summ["wall_seconds"] >= summ["train_seconds"] > 0
    # the ETF run's classifier is the frame: its W ETF error is ~0
    assert float(rows[1]["w_etf_error_mean"]) < 1e-5
    md = (out / "results.md").read_text()
    assert "| wall s |" in md and "wall time: " in md and "summed over 4 finished runs" in md
    assert "| head idx | mid idx | tail idx |" in md and "[0,3) / [3,7) / [7,10)" in md
    acc = [
        json.loads((out / f"ce-ir50-s{s}" / "summary.json").read_text())["final"]["acc"]
        for s in (0, 1)
    ]
    assert f"{100 * statistics.mean(acc):.2f} ± {100 * statistics.stdev(acc):.2f}" in md
    assert "| ce | 50 | 2/2 |" in md and "subset seed 0" in md


def test_real_resume_of_a_cell_without_summary(real_sweep, tmp_path, monkeypatch):
    out = tmp_path / "sw"
    shutil.copytree(real_sweep, out)
    before = (out / "ce-ir50-s0" / "summary.json").read_text()
    (out / "etf_dr-ir50-s1" / "summary.json").unlink()
    calls = []
    real = runner_mod.run_training

    def counting(cfg=None, **kw):
        calls.append((cfg.name, kw.get("resume")))
        return real(cfg, **kw)

    monkeypatch.setattr(runner_mod, "run_training", counting)
    spec = SweepSpec(
        methods=["ce", "etf_dr"],
        seeds=[0, 1],
        imbalance="0.02",
        epochs=1,
        overrides=["run.tensorboard=false", "run.progress=none", "run.threads=1"],
    )
    result = run_sweep(spec, out, log=None)
    assert calls == [("etf_dr-ir50-s1", out / "etf_dr-ir50-s1")]
    assert result["resumed"] == ["etf_dr-ir50-s1"] and len(result["skipped"]) == 3
    assert (out / "ce-ir50-s0" / "summary.json").read_text() == before
    assert (out / "etf_dr-ir50-s1" / "summary.json").is_file()
    assert all(r["n"] == 2 for r in result["rows"])


# ------------------------------------------------------------------ a fake runner


class FakeRunner:
    """Writes a run directory (config, data record, checkpoint, summary) without training;
    ``fail_at`` simulates an interruption: that call leaves a checkpoint and raises."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail_at = fail_at

    def __call__(self, cfg=None, *, resume=None, bundle=None, prefix=""):
        self.calls.append((cfg.name, None if resume is None else Path(resume).name))
        assert bundle is not None
        if resume is None:
            rd = RunDir.create(cfg.run.out_dir, cfg.run.name, explicit=True)
            rd.write_config(config_to_dict(cfg))
            rd.write_data({"class_counts": list(bundle.class_counts)})
            (rd.path / "checkpoint.pt").write_bytes(b"x")
        else:
            rd = RunDir(resume)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt
        seed = cfg.seed
        k = list(METHODS).index(cfg.name.split("-ir")[0])
        summary = {
            "epochs": cfg.optim.epochs,
            "final": {
                "acc": 0.5 + 0.1 * seed + 0.01 * k,
                "many": 0.9,
                "medium": None,
                "few": 0.1 * seed,
            },
            "collapse": {"train": {key: 0.2 * seed + k for key in COLLAPSE_KEYS}},
            "train_seconds": 1.0 + seed,
            "wall_seconds": 2.0 + seed,
        }
        if cfg.data.val != "none":  # a validation split was asked for
            summary["val"] = {"acc": 0.4 + 0.1 * seed}
            every = cfg.eval.every
            for epoch in range(1, cfg.optim.epochs + 1):
                if (every and epoch % every == 0) or epoch == cfg.optim.epochs:
                    acc = 0.01 * epoch + 0.1 * seed  # the fake's curve
                    rd.append_metrics({"kind": "eval", "epoch": epoch, "split": "val", "acc": acc})
                    rd.append_metrics({"kind": "eval", "epoch": epoch, "split": "test", "acc": 0})
        rd.write_summary(summary)
        return runner_mod.RunResult(rd.path, summary)


@pytest.fixture
def fake(monkeypatch):
    f = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_training", f)
    return f


def _spec(**kw):
    base = dict(methods="ce,la", seeds="0,1", imbalance="0.05", epochs=2)
    base.update(kw)
    return SweepSpec(**base)


def test_interrupted_sweep_resumes_and_skips_finished(tmp_path, monkeypatch):
    out = tmp_path / "sw"
    f = FakeRunner(fail_at=3)
    monkeypatch.setattr(runner_mod, "run_training", f)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(), out, log=None)
    # order: per seed, every method; the first two cells are finished and tabulated
    assert [c[0] for c in f.calls] == ["ce-ir20-s0", "la-ir20-s0", "ce-ir20-s1"]
    rows = _read_csv(out / "results.csv")
    assert [r["n"] for r in rows] == ["1", "1"] and rows[0]["acc_std"] == ""
    # the sweep marks every cell it makes before making it
    made = {p.name for p in out.glob(".*.created")}
    assert made == {".ce-ir20-s0.created", ".la-ir20-s0.created", ".ce-ir20-s1.created"}
    # a cell it made that died before its first checkpoint is started afresh
    (out / "la-ir20-s1").mkdir()
    (out / "la-ir20-s1" / "config.yaml").write_text("{}\n")
    (out / ".la-ir20-s1.created").touch()
    mtime = (out / "ce-ir20-s0" / "summary.json").stat().st_mtime_ns

    g = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_training", g)
    result = run_sweep(_spec(), out, log=None)
    assert g.calls == [("ce-ir20-s1", "ce-ir20-s1"), ("la-ir20-s1", None)]
    assert result["skipped"] == ["ce-ir20-s0", "la-ir20-s0"]
    assert (out / "ce-ir20-s0" / "summary.json").stat().st_mtime_ns == mtime
    rows = _read_csv(out / "results.csv")
    assert [r["n"] for r in rows] == ["2", "2"]
    assert float(rows[0]["acc_mean"]) == pytest.approx(0.55)
    assert float(rows[0]["acc_std"]) == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert rows[0]["medium_mean"] == "" and rows[0]["seeds"] == "0;1"
    # a third run has nothing left to do
    h = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_training", h)
    run_sweep(_spec(), out, log=None)
    assert h.calls == []


def _hold(out: Path, name: str) -> subprocess.Popen:
    """Another live process holding the cell's lock (an OS file lock, as a sweep takes it)."""
    out.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, time; from filelock import FileLock; "
        f"lock = FileLock({str(out / f'.{name}.lock')!r}); lock.acquire(); print('held', flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def test_cells_held_by_other_processes_are_left_to_them(tmp_path, fake):
    out = tmp_path / "sw"
    live = _hold(out, "ce-ir20-s0")
    other = _hold(out, "la-ir20-s0")
    dead = _hold(out, "ce-ir20-s1")
    dead.kill()  # its process is gone: the operating system released the lock
    dead.wait()
    msgs: list[str] = []
    try:
        result = run_sweep(_spec(), out, log=msgs.append)
        assert result["busy"] == ["ce-ir20-s0", "la-ir20-s0"]
        assert [c[0] for c in fake.calls] == ["ce-ir20-s1", "la-ir20-s1"]
        assert sum("being trained by process" in m for m in msgs) == 2
        assert result["missing"] == ["ce-ir20-s0", "la-ir20-s0"]
        assert [r["n"] for r in _read_csv(out / "results.csv")] == ["1", "1"]
    finally:
        _release(live)
        _release(other)
    # once the holders are gone the same command finishes the grid
    result = run_sweep(_spec(), out, log=None)
    assert result["busy"] == [] and sorted(result["ran"]) == ["ce-ir20-s0", "la-ir20-s0"]
    assert result["missing"] == [] and not list(out.glob(".*.owner"))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    "kind, says",
    [
        ("notes", "holds files a run does not write (notes.txt)"),
        ("marked notes", "holds files a run does not write (notes.txt)"),
        ("unmarked run", "holds an unfinished run this sweep did not make"),
        ("file", "is a file, not a cell directory"),
        ("symlink", "is a symbolic link"),
        ("dangling symlink", "is a symbolic link"),
    ],
)
def test_a_cell_path_the_sweep_did_not_make_is_left_alone(tmp_path, fake, kind, says):
    """A user's folder (or file, or link) named like a cell is never deleted or trained into:
    the sweep refuses before it trains anything, --list shows the cell as blocked."""
    from ncollapse.sweep import list_cells

    out = tmp_path / "sw"
    cell = out / "ce-ir20-s0"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    if kind.endswith("notes"):
        cell.mkdir()
        (cell / "notes.txt").write_text("my notes")
        if kind == "marked notes":  # a cell the sweep made, then a user's file put in it
            (out / ".ce-ir20-s0.created").touch()
            (cell / "config.yaml").write_text("{}\n")
    elif kind == "unmarked run":
        cell.mkdir()
        (cell / "config.yaml").write_text("{}\n")
    elif kind == "file":
        cell.write_text("a file")
    elif kind == "symlink":
        cell.symlink_to(tmp_path / "elsewhere")
    else:
        cell.symlink_to(tmp_path / "nowhere")
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=re.escape(says)) as err:
        run_sweep(_spec(), out, log=None)
    assert "nothing was deleted" in str(err.value)
    assert fake.calls == [] and _tree(tmp_path) == before
    listed = {c["cell"]: c for c in list_cells(_spec(), out)}
    assert listed["ce-ir20-s0"]["status"] == "blocked" and says in listed["ce-ir20-s0"]["note"]
    assert listed["la-ir20-s0"]["status"] == "new"
    # once it is moved away the sweep runs
    (cell.unlink() if cell.is_symlink() or cell.is_file() else shutil.rmtree(cell))
    assert run_sweep(_spec(), out, log=None)["missing"] == []


def test_an_empty_folder_named_like_a_cell_is_trained_in(tmp_path, fake):
    out = tmp_path / "sw"
    (out / "ce-ir20-s0").mkdir(parents=True)
    result = run_sweep(_spec(), out, log=None)
    assert "ce-ir20-s0" in result["ran"] and (out / "ce-ir20-s0" / "summary.json").is_file()


@pytest.mark.parametrize(
    "record, says",
    [
        ({}, "(methods, imbalance, seeds: missing"),
        ({"methods": ["ce"], "imbalance": [0], "seeds": [0]}, "(imbalance:"),
        ({"methods": ["ce"], "imbalance": [0.1], "seeds": ["a"]}, "(seeds:"),
        ({"methods": "ce", "imbalance": [0.1], "seeds": [0]}, "(methods:"),
        ({"methods": ["ce"], "imbalance": [0.1], "seeds": [0], "overrides": 3}, "(overrides:"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_damaged_sweep_json_is_named_by_collect_and_by_a_rerun(tmp_path, fake, record, says):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(record))
    for call in (lambda: write_results(out), lambda: run_sweep(_spec(), out, log=None)):
        with pytest.raises(UserError, match=re.escape(says)):
            call()
    assert fake.calls == []


def test_lock_is_released_when_a_cell_fails(tmp_path, monkeypatch):
    from ncollapse.sweep.execute import CellLock

    out = tmp_path / "sw"
    monkeypatch.setattr(runner_mod, "run_training", FakeRunner(fail_at=1))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(), out, log=None)
    assert not list(out.glob(".*.owner"))
    lock = CellLock(out, "ce-ir20-s0")
    assert lock.acquire()  # free again
    lock.release()


def test_job_array_cells_and_collect(tmp_path, fake, capsys):
    """--list numbers the cells, --cell I trains exactly that one (one cluster array job each),
    --collect tabulates what has finished and names the rest; the cells run one by one give the
    same results.md as one sweep process."""
    out = tmp_path / "sw"
    args = ["sweep", "--methods", "ce,la", "--seeds", "0,1", "--ratio", "20", "--out", str(out)]
    assert main([*args, "--list", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert [c["cell"] for c in cells] == ["ce-ir20-s0", "la-ir20-s0", "ce-ir20-s1", "la-ir20-s1"]
    assert [c["index"] for c in cells] == [0, 1, 2, 3] and {c["status"] for c in cells} == {"new"}
    assert main([*args, "--cell", "2"]) == 0
    assert [c[0] for c in fake.calls] == ["ce-ir20-s1"]
    capsys.readouterr()
    assert main([*args, "--collect"]) == 0
    text = capsys.readouterr().out
    assert "not finished yet (3): ce-ir20-s0, la-ir20-s0, la-ir20-s1" in text
    for i in (0, 1, 3):
        assert main([*args, "--cell", str(i)]) == 0
    assert sorted(c[0] for c in fake.calls) == sorted(c["cell"] for c in cells)
    by_cells = (out / "results.md").read_text()
    one = tmp_path / "one"
    assert main([*args[:-1], str(one)]) == 0
    assert (one / "results.md").read_text() == by_cells.replace(str(out), str(one))
    assert main([*args, "--cell", "4"]) == 2
    assert "outside the grid" in capsys.readouterr().err


def test_validation_accuracy_is_tabulated_only_when_measured(tmp_path, fake):
    """Runs with a validation split (data.val) get a "val" column and val_acc in the CSV; a
    sweep without one shows no empty column."""
    out = tmp_path / "sw"
    base = ["sweep", "--methods", "ce", "--seeds", "0,1", "--ratio", "20"]
    assert main([*base, "--out", str(out), "--set", "data.val=unused"]) == 0
    assert "| val |" in (out / "results.md").read_text()
    rows = _read_csv(out / "results.csv")
    assert float(rows[0]["val_acc_mean"]) == pytest.approx(0.45)
    plain = tmp_path / "plain"
    assert main([*base, "--out", str(plain)]) == 0
    assert "| val |" not in (plain / "results.md").read_text()
    assert _read_csv(plain / "results.csv")[0]["val_acc_mean"] == ""


def test_accuracy_part_way_through_the_schedule_is_tabulated(tmp_path, fake, capsys):
    """With the validation split measured during training (eval.every), --collect reports its
    accuracy after 10 % and 30 % of the epochs (epochs 2 and 6 of 20), the test split never."""
    out = tmp_path / "sw"
    base = ["sweep", "--methods", "ce", "--seeds", "0,1", "--ratio", "20", "--epochs", "20"]
    base += ["--set", "data.val=unused", "--out", str(out)]
    assert main([*base, "--set", "eval.every=2"]) == 0
    md = (out / "results.md").read_text()
    assert "| val @10% | val @30% |" in md
    row = _read_csv(out / "results.csv")[0]
    assert float(row["val_acc_at_10_mean"]) == pytest.approx(0.02 + 0.05)  # seeds 0, 1
    assert float(row["val_acc_at_30_mean"]) == pytest.approx(0.06 + 0.05)
    assert float(row["val_acc_at_30_std"]) == pytest.approx(0.1 / 2**0.5)
    capsys.readouterr()
    assert main([*base, "--set", "eval.every=2", "--collect", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["val_acc_at_10_mean"] == pytest.approx(0.07)
    # measured only at the end: no such columns, None in the records
    late = tmp_path / "late"
    assert main([*base[:-1], str(late), "--set", "eval.every=0"]) == 0
    assert "| val @10% |" not in (late / "results.md").read_text()
    assert _read_csv(late / "results.csv")[0]["val_acc_at_10_mean"] == ""


def test_sweep_refuses_a_training_run_directory(tmp_path, fake, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    assert main(["sweep", "--out", str(run)]) == 2
    assert "training run's directory" in capsys.readouterr().err
    assert fake.calls == []


@pytest.mark.slow
def test_two_processes_share_one_sweep_without_training_a_cell_twice(tmp_path):
    """The same command started twice: every cell is trained by exactly one of them."""
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "ncollapse", "sweep", "--methods", "ce,etf_dr",
           "--seeds", "0,1,2", "--epochs", "2", "--out", str(out), *QUIET]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(1.0)  # let the first one claim a cell before the second starts
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    logs = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        logs.append(err)
    trained = [re.findall(r"\] (\S+): training", log) for log in logs]
    everything = sorted(trained[0] + trained[1])
    assert everything == sorted(f"{m}-ir20-s{s}" for m in ("ce", "etf_dr") for s in (0, 1, 2))
    assert all(trained), "both processes should have trained something"
    for name in everything:  # exactly one training pass per run: two epochs logged, no resume
        recs = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs if r["kind"] == "train"] == [1, 2]
    assert not list(out.glob(".*.owner"))
    rows = _read_csv(out / "results.csv")
    assert [r["n"] for r in rows] == ["3", "3"]


def test_grid_axes_may_change_settings_may_not(tmp_path, fake, capsys):
    out = tmp_path / "sw"
    run_sweep(_spec(), out, log=None)
    assert len(fake.calls) == 4
    # extending the grid runs only the new cells; results follow the grid asked for now
    msgs = []
    run_sweep(_spec(methods="ce,la,bs", seeds="0,1,2"), out, log=msgs.append)
    new = [c[0] for c in fake.calls[4:]]
    assert sorted(new) == sorted(
        ["bs-ir20-s0", "bs-ir20-s1", "ce-ir20-s2", "la-ir20-s2", "bs-ir20-s2"]
    )
    assert any("adding bs" in m for m in msgs)
    assert [r["n"] for r in _read_csv(out / "results.csv")] == ["3", "3", "3"]
    # narrowing it keeps the run directories, the table shows the asked grid only
    run_sweep(_spec(methods="la", seeds="0"), out, log=None)
    rows = _read_csv(out / "results.csv")
    assert [(r["method"], r["n"]) for r in rows] == [("la", "1")]
    assert (out / "bs-ir20-s2" / "summary.json").is_file()
    assert len(fake.calls) == 9
    # another schedule would mix incomparable runs: refused, naming the difference
    rc = main(["sweep", "--methods", "ce,la", "--seeds", "0,1", "--ratio", "20",
               "--epochs", "3", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "epochs: 2 -> 3" in err and "another --out" in err
    assert err.startswith("ncollapse: error:")
    assert len(fake.calls) == 9


def test_finished_cell_with_other_config_is_refused(tmp_path, fake):
    out = tmp_path / "sw"
    run_sweep(_spec(methods="ce", seeds="0"), out, log=None)
    cfg_path = out / "ce-ir20-s0" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("lr: 0.1", "lr: 0.2"))
    with pytest.raises(Exception, match=r"optim.lr: 0.2 -> 0.1"):
        run_sweep(_spec(methods="ce", seeds="0"), out, log=None)


def test_collect_warns_of_finished_cells_with_another_config(tmp_path, fake, capsys):
    """--collect trains nothing, so it cannot refuse a cell like a run does; it tabulates it and
    names the cell and the difference. A grid whose recipe file is gone is said unchecked."""
    out = tmp_path / "sw"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("data: {name: digits}\noptim: {lr: 0.1}\n")
    args = ["sweep", "--recipe", str(recipe), "--methods", "ce,la", "--seeds", "0", "--ratio", "20"]
    args += ["--epochs", "2", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say about a consistent grid
        assert main([*args, "--collect"]) == 0
    cfg_path = out / "ce-ir20-s0" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("lr: 0.1", "lr: 0.2"))
    with pytest.warns(UserWarning) as caught:
        assert main([*args, "--collect"]) == 0
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1 and "ce-ir20-s0" in notes[0] and "optim.lr: 0.2 -> 0.1" in notes[0]
    assert "| ce |" in capsys.readouterr().out  # still tabulated
    recipe.unlink()
    with pytest.warns(UserWarning, match="were not checked against the sweep's settings"):
        assert main([*args, "--collect"]) == 0


def test_finished_cell_from_an_older_version_is_kept(tmp_path, fake):
    """A run written before a config key existed (here loss.drw) is the same config today."""
    import yaml

    out = tmp_path / "sw"
    run_sweep(_spec(methods="ce", seeds="0"), out, log=None)
    cfg_path = out / "ce-ir20-s0" / "config.yaml"
    saved = yaml.safe_load(cfg_path.read_text())
    del saved["loss"]["drw"], saved["model"]["scale"]
    cfg_path.write_text(yaml.safe_dump(saved))
    result = run_sweep(_spec(methods="ce", seeds="0"), out, log=None)
    assert result["skipped"] == ["ce-ir20-s0"] and len(fake.calls) == 1


def test_cli_json_and_table(tmp_path, fake, capsys, monkeypatch):
    out = tmp_path / "sw"
    args = ["sweep", "--methods", "ce,la", "--seeds", "0", "--imbalance", "0.05", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in data["rows"]] == ["ce", "la"]
    assert data["rows"][0]["imbalance"] == 0.05 and data["rows"][0]["ratio"] == "20"
    assert data["rows"][0]["acc_std"] is None  # a single seed has no standard deviation
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| ce | 20 | 1/1 |" in text and "a single seed shows the mean alone" in text
    # default directory: runs/sweep-<recipe>
    spec = _spec(methods="ce", seeds="0")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    res = run_sweep(spec, log=None)
    assert res["out_dir"] == str(Path("runs") / "sweep-digits")
    assert (tmp_path / "cwd" / "runs" / "sweep-digits" / "results.md").is_file()


def test_epochs_scale_the_schedule_and_drw(tmp_path):
    spec = SweepSpec(
        methods="ldam_drw", seeds="0", imbalance="0.01", recipe="cifar10_lt", epochs=30
    )
    spec = spec.resolve()
    cfg = spec.cell_config("ldam_drw", 0.01, 0, tmp_path)
    assert cfg.optim.epochs == 30 and cfg.optim.milestones == [24, 27]
    assert drw_start(cfg) == 24 and cfg.optim.warmup_epochs == 5
    assert cfg.data.imbalance == 0.01 and cfg.data.subset_seed == 0 and cfg.seed == 0
    assert cfg.run.name == "ldam_drw-ir100-s0" and cfg.model.head == "cosine"
    # on the digits default (30 epochs, first decay at 24) DRW switches on inside the run too
    digits = SweepSpec(methods="ldam_drw", seeds="0").resolve()
    assert drw_start(digits.cell_config("ldam_drw", 0.05, 0, tmp_path)) == 24


def test_parse_imbalance_factors_and_ratios():
    assert parse_imbalance("0.01, 1") == [0.01, 1.0]
    assert parse_ratios("100,10") == [0.01, 0.1]
    with pytest.raises(UserError, match="--ratio 100"):
        parse_imbalance("100")
    with pytest.raises(UserError, match="--imbalance 0.01"):
        parse_ratios("0.01")
    assert cell_name("ce", 0.01, 2) == "ce-ir100-s2"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--methods", "ce,etf_rd"], "did you mean 'etf_dr'"),
        (["--methods", ","], "--methods is empty"),
        (["--seeds", ""], "--seeds is empty"),
        (["--seeds", "0,a"], "--seeds takes integers"),
        (["--seeds", "1,1"], "seed twice"),
        (["--imbalance", "0"], "--imbalance values must be finite and > 0"),
        (["--imbalance", "abc"], "--imbalance takes numbers"),
        (["--imbalance", "100"], "use --ratio 100"),
        (["--ratio", "100,100"], "twice"),
        (["--ratio", "inf"], "finite"),
        (["--set", "seed=3"], "use --seeds"),
        (["--set", "data.imbalance=0.1"], "use --imbalance"),
        (["--recipe", "cifar10_ltt"], "did you mean 'cifar10_lt'"),
        (["--epochs", "0"], "--epochs must be >= 1"),
    ],
)
def test_cli_errors(argv, needle, tmp_path, fake, capsys):
    rc = main(["sweep", *argv, "--out", str(tmp_path / "sw")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("ncollapse: error:") and needle in err
    assert "Traceback" not in err and fake.calls == []


def test_write_results_needs_a_sweep_dir(tmp_path):
    with pytest.raises(Exception, match="not a sweep directory"):
        write_results(tmp_path)


# ------------------------------------------------------------------ recipes


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path):
    cfg = compose(path)
    assert cfg.optim.epochs >= 1 and cfg.name


@pytest.mark.parametrize("ds", ["cifar10", "cifar100"])
@pytest.mark.parametrize("method", ["la", "bs", "focal", "ldam_drw", "allnc"])
def test_method_recipes_match_the_presets(ds, method):
    from ncollapse.config import method_preset

    cfg = config_to_dict(compose(CONFIGS / f"{ds}_lt_{method}.yaml"))
    base = config_to_dict(compose(CONFIGS / f"{ds}_lt.yaml"))
    assert cfg["data"]["imbalance"] == 0.01 and cfg["data"]["name"] == ds
    for section, values in method_preset(method, base).items():
        for key, value in values.items():
            assert cfg[section][key] == value, (section, key)
    assert cfg["optim"]["epochs"] == base["optim"]["epochs"]  # equal budgets
    assert cfg["model"]["width"] == base["model"]["width"]
