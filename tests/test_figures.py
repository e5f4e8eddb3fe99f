"""Every accuracy, time and ratio quoted in README.md, docs/results.md, docs/claims.md and
docs/speed.md is its record's (``benchmarks/figures.py``): the check passes on the docs as they
are, fails when a quoted figure or a record is edited, and ``--write`` restores them; the
full-length table and its verdicts from made-up records; bad input gets one line."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "figures.py"
_spec = importlib.util.spec_from_file_location("figures", SCRIPT)
figures = importlib.util.module_from_spec(_spec)
sys.modules["figures"] = figures  # its dataclasses look their module up
_spec.loader.exec_module(figures)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def _stale(doc: Path, records: Path = figures.RECORDS) -> list:
    return figures.process(doc, figures.Records(records), write=False)


# -- the docs as they are ------------------------------------------------------------------


def test_every_quoted_figure_is_its_records():
    stale = [s for d in figures.DOCS for s in _stale(ROOT / d)]
    assert not stale, (
        "\n".join(
            f"{s.where}: {s.what}: the text says {s.found!r}, the records give {s.want!r}"
            for s in stale
        )
        + "\n(python benchmarks/figures.py --write rewrites them)"
    )


def test_no_figure_is_written_by_hand():
    """Accuracies, times and ratios outside a span or a generated table would escape the check."""
    found = [u for d in figures.DOCS for u in figures.unmarked(ROOT / d)]
    assert not found, found


@pytest.mark.parametrize("doc", figures.DOCS)
def test_each_doc_quotes_its_figures_through_the_script(doc):
    text = (ROOT / doc).read_text()
    spans = figures.SPAN.findall(text)
    assert len(spans) >= 5, f"{doc}: {len(spans)} spans"  # the check is not vacuous
    if doc != "README.md":
        assert re.search(r"<!-- table [\w-]+ -->\n\n *\|", text), f"{doc}: no generated table"


# -- an edited figure, an edited record ----------------------------------------------------


def test_editing_one_quoted_figure_fails_the_check(tmp_path):
    text = (ROOT / "README.md").read_text()
    edited = text.replace("-->72.08<!-- /fig -->", "-->72.18<!-- /fig -->", 1)
    assert edited != text
    doc = tmp_path / "README.md"
    doc.write_text(edited)
    out = _cli("--check", str(doc))
    assert out.returncode == 1, out.stdout + out.stderr
    line = next(i for i, x in enumerate(edited.splitlines(), 1) if "72.18" in x)
    assert f"README.md:{line}:" in out.stdout
    assert "'72.18'" in out.stdout and "'72.08'" in out.stdout
    assert "1 stale" in out.stdout


def test_editing_a_table_cell_fails_and_write_restores_it(tmp_path):
    original = (ROOT / "docs" / "speed.md").read_text()
    edited = original.replace("(72.85; 72.43; 72.12)", "(72.85; 72.44; 72.12)", 1)
    assert edited != original
    doc = tmp_path / "speed.md"
    doc.write_text(edited)
    (stale,) = _stale(doc)
    assert stale.what == "table speed" and "72.44" in stale.found and "72.43" in stale.want
    assert _cli("--write", str(doc)).returncode == 0
    assert doc.read_text() == original
    assert _cli("--check", str(doc)).returncode == 0


def test_a_changed_record_fails_the_check(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(figures.RECORDS, records)
    path = records / "cifar10_lt_r100_etf_dr_200ep_fp32_seed0.json"
    rec = json.loads(path.read_text())
    rec["final"]["acc"] = 0.7310
    path.write_text(json.dumps(rec))
    stale = _stale(ROOT / "README.md", records)
    assert any(s.found == "72.08" and s.want == "73.10" for s in stale)
    assert any(s.found == "0.4" and s.want == "-0.6" for s in stale)  # the derived difference too


def test_the_grids_seed_0_replacing_the_fp32_record_leaves_the_yardstick(tmp_path):
    """benchmarks/full_length.py writes ETF + DR's bf16 seed 0 under the fp32 run's old name: the
    full-length table (and whatever else is built from the grid: verdicts, collapse) takes it,
    the README's speed figures and speed.md keep quoting the fp32 yardstick."""
    records = tmp_path / "records"
    shutil.copytree(figures.RECORDS, records)
    path = records / "cifar10_lt_r100_etf_dr_200ep_seed0.json"
    rec = json.loads(path.read_text())
    rec.update(precision="bf16", machine="AMD EPYC")
    rec["final"]["acc"] = 0.7310
    path.write_text(json.dumps(rec))
    # the README's speed figures keep the yardstick; only its verdicts read the grid
    assert all(x.what.startswith("verdict(") for x in _stale(ROOT / "README.md", records))
    assert _stale(ROOT / "docs" / "speed.md", records) == []
    stale = _stale(ROOT / "docs" / "claims.md", records)
    assert "table full-length" in {s.what for s in stale}
    row = _row(figures.table_full_length(figures.Records(records)), "ETF + DR")
    finals = [
        json.loads(f.read_text())["final"]["acc"]
        for f in sorted(records.glob("cifar10_lt_r100_etf_dr_200ep_seed*.json"))
    ]
    assert 0.7310 in finals  # the grid's seed 0 counts, whatever seeds have landed beside it
    assert row[2] == "bf16" and "AMD EPYC" in row[3].split(", ")
    assert row[4].startswith(figures._cell(finals))


# -- the full-length grid, from made-up records ----------------------------------------------


def _run(acc: float, **extra) -> dict:
    final = {"acc": acc, "many_idx": acc + 0.1, "medium_idx": acc, "few_idx": acc - 0.1}
    final.update(many=acc + 0.05, medium=acc - 0.05, few=None)
    return {
        "final": final,
        "best_test_selected": {"acc": acc + 0.01},
        "val": {"acc": acc - 0.02},
        "wall_seconds": 3 * 3600.0,
        "precision": "bf16",
        "machine": "AMD EPYC",
        **extra,
    }


@pytest.fixture
def grid(tmp_path):
    """A records folder with the published figures and a way to add made-up 200-epoch runs."""
    folder = tmp_path / "records"
    folder.mkdir()
    shutil.copy(figures.RECORDS / "published_cifar_lt.json", folder)

    def add(method: str, accs: list[float], **extra) -> None:
        for seed, acc in enumerate(accs):
            rec = _run(acc, **extra)
            name = f"cifar10_lt_r100_{method}_200ep_seed{seed}.json"
            (folder / name).write_text(json.dumps(rec))

    add.folder = folder
    return add


def _row(lines: list[str], label: str) -> list[str]:
    row = next(x for x in lines if x.startswith(f"| {label}"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_full_length_rows_are_pending_until_three_seeds(grid):
    grid("etf_dr", [0.70, 0.72, 0.74])
    grid("ce", [0.61])
    records = figures.Records(grid.folder)
    lines = figures.table_full_length(records)
    etf = _row(lines, "ETF + DR")
    assert etf[1:5] == ["3 (seeds 0, 1, 2)", "bf16", "AMD EPYC", "72.00 ± 2.00"]
    assert etf[5:8] == ["73.00 ± 2.00", "70.00 ± 2.00", "3.0 ± 0.0"]  # best, validation, hours
    assert _row(lines, "learnable CE")[1] == "pending: 1 of 3 (seed 0)"
    assert _row(lines, "LA")[1] == "pending: 0 of 3"
    assert _row(lines, "learnable CE")[-1] == "72.8 [2]"  # the published figure beside ours
    assert any("MiSLAS" in x for x in lines)
    assert figures.verdict(records, "ce") == "pending: ETF + DR 3 of 3 seeds, learnable CE 1 of 3"
    groups = _row(figures.table_full_length_groups(records), "ETF + DR")
    assert groups[2:5] == ["82.00 ± 2.00", "72.00 ± 2.00", "62.00 ± 2.00"]
    assert groups[-1] == "no class"  # CIFAR-10-LT at r = 0.01 has no class under 20 images


def test_full_length_verdicts_say_when_etf_dr_does_not_beat_a_baseline(grid):
    grid("etf_dr", [0.70, 0.72, 0.74])
    grid("ce", [0.60, 0.61, 0.62])
    grid("la", [0.80, 0.81, 0.82])
    grid("ldam_drw", [0.71, 0.73, 0.75])
    records = figures.Records(grid.folder)
    assert figures.verdict(records, "ce").startswith("holds: ETF + DR +11.00 points")
    la = figures.verdict(records, "la")
    assert la.startswith("does not hold: ETF + DR -9.00 points") and la.endswith(
        "LA (logit adjustment) ahead"
    )
    level = figures.verdict(records, "ldam_drw")
    assert level.startswith("does not hold: ETF + DR -1.00 points")
    assert level.endswith("not significant at 0.05")


def test_a_lead_of_two_and_a_half_standard_errors_is_not_enough_with_three_seeds(grid):
    """Welch's t-test, not a fixed count of standard errors: with 3 seeds a side its degrees of
    freedom are few and its tails heavy."""
    grid("etf_dr", [0.70, 0.72, 0.74])
    grid("ce", [0.64, 0.66, 0.68])  # 6 points behind: 3.7 standard errors, p = 0.021
    grid("la", [0.66, 0.68, 0.70])  # 4 points behind: 2.4 standard errors, p = 0.070
    records = figures.Records(grid.folder)
    assert figures.verdict(records, "ce").startswith("holds: ETF + DR +6.00 points")
    la = figures.verdict(records, "la")
    assert la.startswith("does not hold: ETF + DR +4.00 points") and "p = 0.07" in la


def test_welch_p_matches_the_closed_form_with_two_degrees_of_freedom():
    """Three values against three equal ones: the Welch-Satterthwaite degrees of freedom are
    exactly 2, where Student's t has the closed form P(|T| > t) = 1 - t / sqrt(2 + t^2)."""
    a, b = [0.70, 0.72, 0.74], [0.69, 0.69, 0.69]
    t = 0.03 / math.sqrt(0.02**2 / 3)
    assert figures.welch_p(a, b) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert figures.welch_p([0.7] * 3, [0.7] * 3) == 1.0  # no spread, equal means
    assert figures.welch_p([0.7] * 3, [0.6] * 3) == 0.0  # no spread, different means


def test_mixed_precisions_and_a_missing_field_are_shown(grid):
    grid("etf_dr", [0.70, 0.72, 0.74])
    for seed in (0, 1):  # seed 0: the legacy fp32 record's name; seed 1: a record without it
        path = grid.folder / f"cifar10_lt_r100_etf_dr_200ep_seed{seed}.json"
        rec = json.loads(path.read_text())
        del rec["precision"]
        if seed == 1:
            del rec["val"]
        path.write_text(json.dumps(rec))
    etf = _row(figures.table_full_length(figures.Records(grid.folder)), "ETF + DR")
    assert etf[2] == "bf16, fp32, unrecorded"
    assert etf[6] == "70.00 ± 2.83 (n = 2)"  # validation from the two records that have it


def test_a_run_resumed_on_another_machine_names_each_once(grid):
    """A record of a run resumed elsewhere names its machines (and precisions) "A, then B":
    the table lists each machine once, without the trademark signs of a CPU's model string."""
    grid("la", [0.70, 0.71, 0.72])
    path = grid.folder / "cifar10_lt_r100_la_200ep_seed2.json"
    rec = json.loads(path.read_text())
    rec.update(machine="AMD EPYC, then Intel(R) Xeon(R) Processor", precision="fp32, then bf16")
    path.write_text(json.dumps(rec))
    la = _row(figures.table_full_length(figures.Records(grid.folder)), "LA")
    assert la[2:4] == ["bf16, fp32", "AMD EPYC, Intel Xeon"]
    assert figures._short_machine("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz") == (
        "Intel Core i7-8700 @ 3.20GHz"
    )
    assert figures._short_machine("NVIDIA H100 80GB HBM3") == "NVIDIA H100 80GB HBM3"
    # the legacy name of a record that predates the field reads as the newer records do
    assert figures._short_machine("2-core AMD EPYC") == "AMD EPYC"


def test_full_length_reads_the_records_full_length_py_writes(tmp_path, grid):
    """A record as ``benchmarks/full_length.py`` writes it (a finished run's summary with the
    validation figures, precision, threads, machine and command added) fills its row."""
    import ncollapse

    spec = importlib.util.spec_from_file_location(
        "full_length", ROOT / "benchmarks" / "full_length.py"
    )
    full_length = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(full_length)
    over = {
        "data": {"name": "digits", "imbalance": 0.1, "val": "unused", "val_per_class": 5},
        "optim": {"epochs": 1, "warmup_epochs": 0, "milestones": [], "batch_size": 64},
        "eval": {"collapse_every": 0, "splits": ["val", "test"]},
        "run": {"tensorboard": False, "progress": "none", "threads": 1},
    }
    result = ncollapse.train(method="ce", overrides=over, out=tmp_path / "runs", name="ce-s0")
    path = full_length.write_record(result.run_dir, ["train", "--method", "ce"], tmp_path / "w")
    name = full_length.run_name("ce", 0)
    assert name == "cifar10_lt_r100_ce_200ep_seed0"
    shutil.copy(path, grid.folder / f"{name}.json")
    rec = json.loads(path.read_text())
    row = _row(figures.table_full_length(figures.Records(grid.folder)), "learnable CE")
    machine = figures._short_machine(rec["machine"])  # "Intel Xeon" for "Intel(R) Xeon(R) ..."
    assert row[1:4] == ["pending: 1 of 3 (seed 0)", rec["precision"], machine]
    assert (
        row[4] == f"{100 * rec['final']['acc']:.2f}" and row[6] == f"{100 * rec['val']['acc']:.2f}"
    )
    assert row[5] == f"{100 * rec['best_test_selected']['acc']:.2f}"


# -- expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("pm(100 * fast.final.acc) :.2f", "72.47 ± 0.37"),
        ("each(100 * fast.final.acc) :.2f", "72.85; 72.43; 72.12"),
        ("one(official.wall_seconds) / mean(fast.wall_seconds) :.1f", "12.6"),
        ("one(official.wall_seconds) :,.0f", "15,710"),
        ("distinct(precision(official))", "fp32"),
        ("distinct(precision(fast))", "bf16"),
        ("one(100 * row7.rows.la.acc_mean) :.2f", "70.00"),
        ("n(fast)", "3"),
        ('one(rec("cifar10_lt_r100_fast_seed0").epochs)', "72"),
        ("one(ufm_converge.output[0].runs[1].ce.iterations)", "47"),
        ("one(official.val.acc or 0)", "0"),
    ],
)
def test_expressions(expr, want):
    assert figures.figure(figures.Records(figures.RECORDS), expr) == want


# -- bad input: one line, no traceback -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- fig pm(fsat.final.acc) -->x<!-- /fig -->", "unknown record group 'fsat'"),
        ("<!-- fig one(official.final.acx) -->x<!-- /fig -->", "has no official.final.acx"),
        ("<!-- fig pm(100 * ) -->x<!-- /fig -->", "cannot read the expression"),
        ("<!-- fig __import__('os') -->x<!-- /fig -->", "unknown function __import__()"),
        ("<!-- fig official.final.acc.hex() -->x<!-- /fig -->", "not allowed in a figure"),
        ("<!-- fig pm(official.final.acc) -->x<!-- /fig -->", "needs two values or more"),
        ("<!-- fig one(fast.final.acc) -->x<!-- /fig -->", "one(fast.final.acc): 3 records"),
        ("<!-- fig one(official.final.acc) :q -->x<!-- /fig -->", "format 'q'"),
        ('<!-- fig verdict("etf_dr") -->x<!-- /fig -->', "verdict() takes a baseline"),
        ("<!-- fig one(official.final.acc)", "without its <!-- /fig -->"),
        ("<!-- table nonesuch -->\n<!-- /table -->", "unknown table 'nonesuch'"),
        ("<!-- table speed -->\n| x |", "table speed has no <!-- /table -->"),
        ("text <!-- table speed --> text", "a table marker"),
        ("<!-- fig one(official.epochs) -->200<!-- /fig --> epochs", "put a word before it"),
    ],
)
def test_a_bad_figure_is_one_line(tmp_path, text, message):
    doc = tmp_path / "doc.md"
    prose = text.startswith("<!-- fig") and "put a word" not in message
    doc.write_text(f"# A page\n\n{'A figure: ' if prose else ''}{text}\n")
    out = _cli("--check", str(doc))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"figures: {doc}:3: ") and message in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--records", "/nonexistent"], "no records folder /nonexistent"),
        (["/nonexistent.md"], "cannot read /nonexistent.md"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--check", "--write"], "not allowed with argument"),
    ],
)
def test_bad_arguments_are_one_line(args, message):
    out = _cli(*args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and message in out.stderr


def test_a_broken_record_is_one_line(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(figures.RECORDS, records)
    (records / "cifar10_lt_r100_fast_seed1.json").write_text("{not json")
    out = _cli("--records", str(records), str(ROOT / "README.md"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "cifar10_lt_r100_fast_seed1.json is not JSON" in out.stderr
