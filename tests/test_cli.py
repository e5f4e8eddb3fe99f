"""What users see: the CLI's output, the files a run writes, the errors a mistake gets."""

import json
import subprocess
import sys

import pytest

from ncollapse.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "compare"):
        assert cmd in out


def test_console_script_module_runs():
    res = subprocess.run(
        [sys.executable, "-m", "ncollapse", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "ncollapse" in res.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--set", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
        (["train", "--imbalance", "100"], "must be in (0, 1]"),
        (["train", "--set", "data.imbalance=0"], "must be in (0, 1]"),
        (["train", "--method", "etfdr"], "did you mean 'etf_dr'"),
        (["train", "--config", "no_such_recipe"], "neither a file nor a known recipe"),
        (["train", "--resume", "/nonexistent/run"], "not a run directory"),
        (["compare", "--config-a", "x.yaml"], "go together"),
        (["train", "--set", "model.head=linear", "--set", "loss.name=dr"], "needs model.head=etf"),
    ],
)
def test_mistakes_get_one_line_errors(capsys, tmp_path, argv, needle):
    code = main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written for a rejected run


def test_compare_json_reports_both_methods(capsys, tmp_path):
    code = main(
        ["compare", "--epochs", "2", "--json", "--out", str(tmp_path), "--set", "run.progress=none"]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert [m["method"] for m in res["methods"]] == ["ce", "etf_dr"]
    assert res["data"]["name"] == "digits" and len(res["data"]["class_counts"]) == 10
    for m in res["methods"]:
        f = m["final"]
        for key in ("acc", "many", "medium", "few", "many_idx", "medium_idx", "few_idx"):
            assert key in f
        assert 0.0 <= f["acc"] <= 1.0 and len(f["per_class"]) == 10
        assert m["train_seconds"] > 0
        assert (tmp_path / m["run_dir"].split("/")[-1] / "summary.json").is_file()
    assert res["methods"][0]["head"] == "linear" and res["methods"][1]["loss"] == "dr"


def test_compare_table(capsys, tmp_path):
    code = main(["compare", "--epochs", "1", "--out", str(tmp_path), "--set", "run.progress=none"])
    assert code == 0
    out = capsys.readouterr().out
    assert "overall" in out and "many" in out and "few" in out and "time (s)" in out
    assert "\nce " in out and "\netf_dr " in out


def test_train_then_resume_a_finished_run(capsys, tmp_path):
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--out",
                str(tmp_path),
                "--name",
                "one",
                "--set",
                "run.progress=none",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out
    assert "final test accuracy" in first
    assert (
        main(["train", "--resume", str(tmp_path / "one"), "--set", "run.progress=none", "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["epochs"] == 1 and "acc" in res["final"]
    # a resume with a changed recipe is refused, listing the difference
    code = main(["train", "--resume", str(tmp_path / "one"), "--set", "optim.lr=0.3"])
    assert code == 2 and "optim.lr: 0.1 -> 0.3" in capsys.readouterr().err
    # the evaluation batch changes no result: a resume may change it, not the other eval keys
    argv = ["train", "--resume", str(tmp_path / "one"), "--set", "run.progress=none", "--set"]
    assert main([*argv, "eval.batch_size=16"]) == 0
    capsys.readouterr()
    assert main([*argv, "eval.every=2"]) == 2
    assert "eval.every: 1 -> 2" in capsys.readouterr().err


def test_a_resume_evaluates_at_its_own_batch_size(tmp_path, monkeypatch):
    """``eval.batch_size`` given on a resume is the one the resumed run evaluates with, and the
    run finishes as the uninterrupted one did (the batch size changes no result)."""
    import torch

    import ncollapse
    from ncollapse.engine import sources

    over = ["optim.epochs=4", "run.threads=1", "run.tensorboard=false", "eval.collapse_every=0"]
    whole = ncollapse.train(overrides=over, out=tmp_path / "a", name="r", progress="none")
    from test_engine import cut_after_two_epochs

    cut_after_two_epochs(
        monkeypatch, ncollapse.train, overrides=over, out=tmp_path / "b", name="r", progress="none"
    )
    sizes = []
    original = sources.Splits.eval_batches

    def spy(self, split, batch_size):
        sizes.append(batch_size)
        return original(self, split, batch_size)

    monkeypatch.setattr(sources.Splits, "eval_batches", spy)
    resumed = ncollapse.train(
        resume=tmp_path / "b" / "r", overrides=["eval.batch_size=7"], progress="none"
    )
    assert sizes and set(sizes) == {7}
    assert resumed.summary["final"]["acc"] == pytest.approx(whole.summary["final"]["acc"])
    want = torch.load(whole.run_dir / "model.pt", weights_only=True)
    got = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.slow
def test_ctrl_c_names_the_command_that_resumes_and_that_command_works(tmp_path):
    """A real SIGINT (Ctrl-C) after the first checkpoint: exit 130, one line giving the exact
    command that goes on, and that command finishes the run."""
    import os
    import re
    import shlex
    import signal
    import time
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}  # fmt: skip
    # long enough (a few seconds even on a quiet machine) that the signal lands mid-run
    argv = ["train", "--epochs", "150", "--out", "runs", "--name", "cut", "--set",
            "run.progress=none", "--set", "run.tensorboard=false"]  # fmt: skip
    # a job started in the background by a shell inherits SIGINT ignored (as CI may start the
    # suite); the child gets the default disposition back, as a terminal's foreground job has it
    proc = subprocess.Popen([sys.executable, "-m", "ncollapse", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "runs" / "cut" / "checkpoint.pt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    command = re.search(r"`(ncollapse train --resume [^`]+)`", err)
    assert command, err
    again = subprocess.run([sys.executable, "-m", *shlex.split(command.group(1))], cwd=tmp_path,
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())["epochs"] == 150


def test_a_write_the_library_did_not_name_still_gets_one_line(monkeypatch, capsys):
    """A full disk or a read-only place met outside the library's own writers: one line naming
    the file and the fix (exit 2); any other OSError stays a traceback (a bug to report)."""
    import errno

    import ncollapse.cli.analyze as analyze_cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/x.png")

    monkeypatch.setattr(analyze_cli, "run", full)
    assert main(["analyze", "somewhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ncollapse: error: cannot write /data/out/x.png (No space left on device): the disk is "
        "full: free some space there; then run the same command again (files written before "
        "are intact)"
    ]

    def other(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(analyze_cli, "run", other)
    with pytest.raises(OSError, match="Input/output"):
        main(["analyze", "somewhere"])


def test_a_resume_is_recorded_in_env_json_with_its_own_threads(tmp_path, monkeypatch):
    """``env.json`` keeps the first start's record and lists each resume after it: the epoch it
    picked up after, its thread count and device; a finished run started again adds nothing."""
    import ncollapse
    from test_engine import cut_after_two_epochs

    over = ["optim.epochs=3", "run.threads=1", "run.tensorboard=false", "eval.collapse_every=0"]
    cut_after_two_epochs(
        monkeypatch, ncollapse.train, overrides=over, out=tmp_path, name="r", progress="none"
    )
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["threads"] == 1 and "resumes" not in env
    with pytest.warns(UserWarning, match="started with 1: the result differs in rounding"):
        ncollapse.train(resume=tmp_path / "r", overrides=["run.threads=2"], progress="none")
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["threads"] == 1  # the first start's, as it was
    (start,) = env["resumes"]
    assert start["after_epoch"] == 2 and start["threads"] == 2 and "step" not in start
    assert start["device"] == "cpu" and start["precision"] in ("fp32", "bf16")
    ncollapse.train(resume=tmp_path / "r", progress="none")  # finished: nothing to train
    assert json.loads((tmp_path / "r" / "env.json").read_text())["resumes"] == [start]
