"""Every figure the docs quote, from its record: check them, or rewrite them.

The accuracies, times and ratios quoted in README.md, docs/results.md, docs/claims.md and
docs/speed.md are computed from records: JSON files under ``benchmarks/records/`` (a run's
``summary.json``, a sweep's ``--collect --json`` output, a command's ``--json`` output, or
published figures transcribed with their sources). In the Markdown a figure is a span

    <!-- fig pm(100 * fast.final.acc) :.2f -->72.47 ± 0.37<!-- /fig -->

(an expression over the records and a format after the last ``:``) and a table is a block

    <!-- table speed -->
    | ... generated ... |
    <!-- /table -->

whose rows the functions in ``TABLES`` below write. ``--check`` (the default) recomputes every
span and table and lists each that differs from its record; ``--write`` rewrites them in place.
Expressions: a record group (``GROUPS``; ``rec("glob")`` for any other records) followed by
field names (``fast.final.acc``, ``row7.rows.la.acc_mean``: in a list of rows, the row whose
``trial`` (a trial's row), else ``method`` or ``key``, is that name; ``[i]`` indexes a list); arithmetic (+ - * /) value by value;
``x or "default"`` for a field some records lack; and

    mean(x)  std(x)  pm(x)  each(x)  one(x)  distinct(x)  n(x)  total(x)  items(x)
    precision(group)  verdict("ce")

(``std`` is the sample standard deviation, ddof 1; ``pm`` is mean ± std; ``each`` lists the
values, "; "-separated; ``one`` requires exactly one value; ``distinct`` lists the different
values; ``items`` makes the rows of a list field values of their own; ``precision`` is each
record's training precision; ``verdict`` is claims row 1's or row 7's verdict at full length.)
The format is Python's (``.2f``, ``,.0f``, ``+.1f``). A span never starts a line (Markdown would
read the line as an HTML block), and markers inside code are left alone. ``--unmarked`` lists
accuracies, times and ratios written outside any span (a figure no check would see).

    python benchmarks/figures.py              # check: exit 1 and the list when a figure is stale
    python benchmarks/figures.py --write      # rewrite every span and table from the records
    python benchmarks/figures.py --list       # each figure, its value and the records it reads
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "records"
DOCS = [
    "README.md",
    "docs/results.md",
    "docs/claims.md",
    "docs/speed.md",
    "docs/many_classes.md",
]

#: record groups the expressions name (globs over the record names, without ``.json``)
GROUPS = {
    # the official 200-epoch ETF + DR run, seed 0 (2-core AMD EPYC, fp32): speed.md's yardstick,
    # a copy kept apart from the full-length grid (whose seed 0 a bf16 rerun, --redo, replaces)
    "official": "cifar10_lt_r100_etf_dr_200ep_fp32_seed0",
    # the fast recipe (t27, 72 epochs) and its earlier 60-epoch forms, 2-core AMD EPYC, bf16
    "fast": "cifar10_lt_r100_fast_seed[0-9]",
    "fast_t25": "cifar10_lt_r100_fast_t25_seed[0-9]",
    "fast_t16": "cifar10_lt_r100_fast_t16_seed[0-9]",
    # the fast recipe as t16, on one H200
    "fast_h200": "cifar10_lt_r100_fast_h200_seed[0-9]",
    # claims row 7: six methods at 30 epochs, 3 seeds, one H200 (a sweep's --collect --json)
    "row7": "claims_row7_h200_30ep",
    # the embedded digits: `ncollapse compare`, the six-method sweep, the 150-epoch sweeps
    "digits": "digits_compare",
    "digits_sweep": "digits_sweep_30ep",
    "digits_150": "digits_sweep_150ep",
    "digits_step": "digits_step_sweep_150ep",
    # the unconstrained feature model (claims rows 4 and 5)
    "ufm_55": "ufm_threshold_5x500_5x100",
    "ufm_55_fine": "ufm_threshold_5x500_5x100_tol1e-7",
    "ufm_37": "ufm_threshold_3x500_7x100",
    "ufm_converge": "ufm_converge_k10_100",
    # benchmarks/throughput.py --json on the 2-core AMD EPYC: native, and limited to AVX2
    "throughput": "throughput_cpu",
    "throughput_avx2": "throughput_cpu_avx2",
    # benchmarks/eval_batch.py --json on the 2-core AMD EPYC, beside two training runs
    "eval_batch": "eval_batch_cpu",
    # benchmarks/pack.py --json on the 2-core AMD EPYC: four runs packed against one alone
    "pack_cpu": "pack_cpu",
    "pack_cpu_fp32": "pack_cpu_fp32",  # the same in fp32 (--fp32)
    # figures published by others, with their sources
    "published": "published_cifar_lt",
    # many classes: the 100-class Tiny-ImageNet dev set at 32 px (benchmarks/many_classes.py,
    # 2-core AMD EPYC, bf16, one thread per run): the final recipes' runs (3 seeds each), the
    # validation trials at r = 0.01 (seed 0), the gradient probe, and the nested 10- and
    # 25-class subsets (seeds 0 and 1)
    "tin_r100_dr": "tinyimagenet100_dev_r100_etf_dr_seed[0-9]",
    "tin_r100_ce": "tinyimagenet100_dev_r100_ce_seed[0-9]",
    "tin_r10_dr": "tinyimagenet100_dev_r10_etf_dr_seed[0-9]",
    "tin_r10_ce": "tinyimagenet100_dev_r10_ce_seed[0-9]",
    "tin_trials": "tinyimagenet100_dev_r100_trials",
    "tin_probe": "tinyimagenet100_dev_r100_probe",
    "tin_k10": "tinyimagenet100_dev_k10_r100_trials",
    "tin_k25": "tinyimagenet100_dev_k25_r100_trials",
}

#: the full-length CIFAR-10-LT grid (benchmarks/full_length.py): method -> (label, recipe)
FULL_LENGTH = {
    "etf_dr": ("ETF + DR", "cifar10_lt_r100_etf_dr"),
    "ce": ("learnable CE", "cifar10_lt_r100_ce"),
    "la": ("LA (logit adjustment)", "cifar10_lt_la"),
    "ldam_drw": ("LDAM-DRW", "cifar10_lt_ldam_drw"),
}
#: the published figure beside each (benchmarks/records/published_cifar_lt.json)
PUBLISHED = {
    "etf_dr": "cifar10_r100_etf_dr",
    "ce": "cifar10_r100_ce_mixup",
    "la": "cifar10_r100_la",
    "ldam_drw": "cifar10_r100_ldam_drw",
}
SEEDS_WANTED = 3
SIGNIFICANCE = 0.05  # the full-length verdicts' two-sided level (Welch's t-test)
#: records written before summaries carried their precision and machine: what the commit that
#: added each states (a record that has the field is never overridden)
LEGACY_PRECISION = {  # commit 6ff46e2
    "cifar10_lt_r100_etf_dr_200ep_fp32_seed0": "fp32",
    "cifar10_lt_r100_etf_dr_200ep_seed0": "fp32",
}
LEGACY_MACHINE = {
    "cifar10_lt_r100_etf_dr_200ep*seed0": "2-core AMD EPYC",  # commit 6ff46e2
    "cifar10_lt_r100_fast_seed[0-9]": "2-core AMD EPYC",  # commit d30c4f7
    "cifar10_lt_r100_fast_t25_seed[0-9]": "2-core AMD EPYC",  # commit f32f05f
    "cifar10_lt_r100_fast_t16_seed[0-9]": "2-core AMD EPYC",  # commit d2dcc74
    "cifar10_lt_r100_fast_h200_seed[0-9]": "one NVIDIA H200",  # commit 960cbb7
}

SPAN = re.compile(r"<!-- fig (?P<expr>.*?) -->(?P<text>.*?)<!-- /fig -->")
OPEN_TABLE = re.compile(r"^(?P<indent> *)<!-- table (?P<name>[\w-]+) -->\s*$")
CLOSE_TABLE = re.compile(r"^ *<!-- /table -->\s*$")
CODE_SPAN = re.compile(r"(`[^`\n]*`)")


class FigureError(Exception):
    """A figure that cannot be computed: its message names the place and the problem."""


# -- records ---------------------------------------------------------------------------------


class Records:
    """The record files of one folder, read once each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, dict] = {}
        self.used: set[str] = set()

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json"))

    def read(self, name: str) -> dict:
        if name not in self._cache:
            path = self.folder / f"{name}.json"
            try:
                self._cache[name] = json.loads(path.read_text())
            except FileNotFoundError:
                raise FigureError(f"no record {path}") from None
            except json.JSONDecodeError as exc:
                raise FigureError(f"{path} is not JSON ({exc})") from None
        self.used.add(name)
        return self._cache[name]

    def glob(self, pattern: str) -> list[str]:
        return [n for n in self.names() if fnmatch(n, pattern)]

    def group(self, pattern: str, *, label: str) -> Values:
        names = self.glob(pattern)
        if not names:
            raise FigureError(f"{label}: no record matches {pattern}.json in {self.folder}")
        return Values([self.read(n) for n in names], names, label)


MISSING = object()


@dataclass
class Values:
    """One value per record (or per item), with the record names and the path read so far."""

    items: list
    names: list[str]
    path: str

    def field(self, key: str | int) -> Values:
        return Values([_get(v, key) for v in self.items], self.names, f"{self.path}.{key}")

    def numbers(self) -> list[float]:
        out = []
        for name, v in zip(self.names, self.items):
            if v is MISSING:
                raise FigureError(f"record {name} has no {self.path}")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise FigureError(f"{self.path} in record {name} is {v!r}, not a number")
            out.append(float(v))
        return out

    def present(self) -> list:
        for name, v in zip(self.names, self.items):
            if v is MISSING:
                raise FigureError(f"record {name} has no {self.path}")
        return self.items


def _get(item, key):
    if item is MISSING:
        return MISSING
    if isinstance(item, dict):
        return item.get(str(key), MISSING)
    if isinstance(item, list):
        if isinstance(key, int):
            return item[key] if -len(item) <= key < len(item) else MISSING
        for row in item:  # a trial's row is named by its trial (its method is shared)
            if not isinstance(row, dict):
                continue
            names = (row["trial"],) if "trial" in row else (row.get("method"), row.get("key"))
            if key in names:
                return row
    return MISSING


# -- values as text --------------------------------------------------------------------------


@dataclass
class Pm:
    """mean ± standard deviation."""

    mean: float
    std: float


@dataclass
class Each:
    """Several values, listed."""

    values: list


def render(value, spec: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Pm):
        return f"{render(value.mean, spec)} ± {render(value.std, spec)}"
    if isinstance(value, Each):
        return "; ".join(render(v, spec) for v in value.values)
    if isinstance(value, Values):
        raise FigureError(f"{value.path} is one value per record: take mean(), one(), each() ...")
    try:
        return _num(value, spec or "g")
    except (TypeError, ValueError) as exc:
        raise FigureError(f"format {spec!r}: {exc}") from None


def _num(x: float, spec: str) -> str:
    text = format(x, spec)
    return text[1:] if re.fullmatch(r"-[0.,]*", text) else text  # no "-0.000"


# -- statistics over seeds -------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def _std(xs: list[float], path: str) -> float:
    if len(xs) < 2:
        raise FigureError(f"std of {path} needs two values or more, found {len(xs)}")
    return statistics.stdev(xs)


def _scalar(x) -> float:
    if isinstance(x, Values):
        xs = x.numbers()
        if len(xs) != 1:
            raise FigureError(f"{x.path}: {len(xs)} values where one is meant (use mean, one)")
        return xs[0]
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise FigureError(f"{x!r} is not a number")
    return float(x)


def _values(x, fn: str) -> Values:
    if not isinstance(x, Values):
        raise FigureError(f"{fn}() takes record values, not {x!r}")
    return x


def f_mean(x) -> float:
    return _mean(_values(x, "mean").numbers())


def f_std(x) -> float:
    x = _values(x, "std")
    return _std(x.numbers(), x.path)


def f_pm(x) -> Pm:
    x = _values(x, "pm")
    xs = x.numbers()
    return Pm(_mean(xs), _std(xs, x.path))


def f_each(x) -> Each:
    x = _values(x, "each")
    return Each([v if isinstance(v, str) else float(v) for v in x.present()])


def f_one(x):
    x = _values(x, "one")
    items = x.present()
    if len(items) != 1:
        raise FigureError(f"one({x.path}): {len(items)} records ({', '.join(x.names)})")
    return items[0]


def f_distinct(x) -> str:
    return _distinct(str(v) for v in _values(x, "distinct").present())


def f_items(x) -> Values:
    """The rows of a list field as values of their own (``items(digits_sweep.rows)``)."""
    x = _values(x, "items")
    out, names = [], []
    for name, v in zip(x.names, x.present()):
        if not isinstance(v, list):
            raise FigureError(f"items({x.path}): {name} holds {type(v).__name__}, not a list")
        out += v
        names += [name] * len(v)
    return Values(out, names, f"items({x.path})")


def f_n(x) -> int:
    return len(_values(x, "n").items)


def f_total(x) -> float:
    return math.fsum(_values(x, "total").numbers())


def f_precision(x) -> Values:
    x = _values(x, "precision")
    return Values([_precision(r, n) for r, n in zip(x.items, x.names)], x.names, "precision")


def _precision(record: dict, name: str) -> str:
    return record.get("precision") or LEGACY_PRECISION.get(name) or "unrecorded"


FUNCTIONS: dict[str, Callable] = {
    "mean": f_mean,
    "std": f_std,
    "pm": f_pm,
    "each": f_each,
    "one": f_one,
    "n": f_n,
    "distinct": f_distinct,
    "items": f_items,
    "total": f_total,
    "precision": f_precision,
}
OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


# -- expressions -----------------------------------------------------------------------------


class Evaluator:
    def __init__(self, records: Records) -> None:
        self.records = records

    def __call__(self, source: str):
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise FigureError(f"cannot read the expression {source.strip()!r}: {exc.msg}") from None
        return self.eval(tree.body)

    def eval(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in GROUPS:
                raise FigureError(f"unknown record group {node.id!r} (known: {', '.join(GROUPS)})")
            return self.records.group(GROUPS[node.id], label=node.id)
        if isinstance(node, ast.Attribute):
            return self._field(self.eval(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            key = self.eval(node.slice)
            if not isinstance(key, int | str):
                raise FigureError(f"an index is a number or a name, not {key!r}")
            return self._field(self.eval(node.value), key)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return self._arith(operator.mul, -1, self.eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return self._arith(OPS[type(node.op)], self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2:
            return self._or(self.eval(node.values[0]), self.eval(node.values[1]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            args = [self.eval(a) for a in node.args]
            if node.func.id == "rec":
                if len(args) != 1 or not isinstance(args[0], str):
                    raise FigureError('rec() takes one record name or glob: rec("name_seed*")')
                return self.records.group(args[0], label=args[0])
            if node.func.id == "verdict":
                baselines = [m for m in FULL_LENGTH if m != "etf_dr"]
                if len(args) != 1 or args[0] not in baselines:
                    raise FigureError(f"verdict() takes a baseline: {', '.join(baselines)}")
                return verdict(self.records, args[0])
            if node.func.id not in FUNCTIONS:
                raise FigureError(
                    f"unknown function {node.func.id}() (known: rec, verdict, {', '.join(FUNCTIONS)})"
                )
            if len(args) != 1:
                raise FigureError(f"{node.func.id}() takes one argument")
            return FUNCTIONS[node.func.id](args[0])
        raise FigureError(f"not allowed in a figure: {ast.unparse(node)!r}")

    @staticmethod
    def _field(value, key):
        if not isinstance(value, Values):
            raise FigureError(f"{value!r} has no field {key!r}")
        return value.field(key)

    @staticmethod
    def _arith(op, a, b):
        try:
            if isinstance(a, Values) and isinstance(b, Values):
                xs, ys = a.numbers(), b.numbers()
                if len(xs) != len(ys):
                    raise FigureError(f"{a.path} ({len(xs)} values) with {b.path} ({len(ys)})")
                return Values(
                    [op(x, y) for x, y in zip(xs, ys)], a.names, f"({a.path} op {b.path})"
                )
            if isinstance(a, Values):
                return Values([op(x, _scalar(b)) for x in a.numbers()], a.names, a.path)
            if isinstance(b, Values):
                return Values([op(_scalar(a), y) for y in b.numbers()], b.names, b.path)
            return op(_scalar(a), _scalar(b))
        except ZeroDivisionError:
            raise FigureError("division by zero") from None

    @staticmethod
    def _or(value, default):
        if not isinstance(value, Values):
            return value
        return Values(
            [default if v is MISSING else v for v in value.items], value.names, value.path
        )


def figure(records: Records, expr: str) -> str:
    """The text of one span: ``EXPR`` or ``EXPR :FORMAT``."""
    source, spec = expr, ""
    if ":" in expr:
        source, spec = expr.rsplit(":", 1)
    return render(Evaluator(records)(source), spec.strip())


# -- the full-length grid --------------------------------------------------------------------


def full_length_records(records: Records, method: str) -> Values | None:
    names = records.glob(f"cifar10_lt_r100_{method}_200ep_seed*")
    if not names:
        return None
    return Values([records.read(n) for n in names], names, method)


def _cell(xs: list[float], scale: float = 100.0, digits: int = 2) -> str:
    spec = f".{digits}f"
    if not xs:
        return "-"
    if len(xs) == 1:
        return _num(xs[0] * scale, spec)
    return f"{_num(_mean(xs) * scale, spec)} ± {_num(_std(xs, '') * scale, spec)}"


def _numbers(v: Values, path: str) -> list[float]:
    """The values of ``path`` in the records that have it (a field some lack is skipped)."""
    out = []
    for item in v.items:
        for key in path.split("."):
            item = _get(item, key)
        if item is not MISSING and item is not None:
            out.append(float(item))
    return out


def _with_n(xs: list[float], n: int, **kw) -> str:
    """The cell of a row of ``n`` records; says so when fewer hold the field."""
    if not xs:
        return "not in the record" if n == 1 else "not in the records"
    text = _cell(xs, **kw)
    return text if len(xs) == n else f"{text} (n = {len(xs)})"


def _seeds(v: Values | None) -> str:
    """How many of the wanted seeds are on record: "pending: 1 of 3 (seed 0)" until all are."""
    seeds = [] if v is None else [n.rsplit("seed", 1)[1] for n in v.names]
    which = f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})" if seeds else ""
    if len(seeds) < SEEDS_WANTED:
        return f"pending: {len(seeds)} of {SEEDS_WANTED}{which}"
    return f"{len(seeds)}{which}"


def verdict(records: Records, baseline: str) -> str:
    """ETF + DR against one baseline at full length, final-epoch test accuracy: pending until
    both have their seeds; then Welch's t-test (unequal variances, two-sided): holds when ETF + DR
    is ahead with p < 0.05, does not hold otherwise, saying whether the baseline is ahead or the
    difference is not significant."""
    ours, theirs = full_length_records(records, "etf_dr"), full_length_records(records, baseline)
    n_ours = 0 if ours is None else len(ours.items)
    n_theirs = 0 if theirs is None else len(theirs.items)
    label = FULL_LENGTH[baseline][0]
    if n_ours < SEEDS_WANTED or n_theirs < SEEDS_WANTED:
        return (
            f"pending: ETF + DR {n_ours} of {SEEDS_WANTED} seeds, {label} {n_theirs} of "
            f"{SEEDS_WANTED}"
        )
    a, b = _numbers(ours, "final.acc"), _numbers(theirs, "final.acc")
    d = (_mean(a) - _mean(b)) * 100
    p = welch_p(a, b)
    said = (
        f"{d:+.2f} points at the final epoch ({_cell(a)} against {_cell(b)}; "
        f"Welch's t-test p = {p:.2g})"
    )
    if p < SIGNIFICANCE and d > 0:
        return f"holds: ETF + DR {said}"
    if p < SIGNIFICANCE:
        return f"does not hold: ETF + DR {said}, {label} ahead"
    return f"does not hold: ETF + DR {said}, not significant at {SIGNIFICANCE}"


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test that two samples share a mean (unequal variances;
    Welch-Satterthwaite degrees of freedom). Two samples without spread: 0 where the means
    differ, 1 where they are equal."""
    from scipy import stats  # only the verdicts need it

    va, vb = _std(a, "") ** 2 / len(a), _std(b, "") ** 2 / len(b)
    if va + vb == 0:
        return float(_mean(a) == _mean(b))
    t = (_mean(a) - _mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def table_full_length(records: Records) -> list[str]:
    pub = records.read(GROUPS["published"])["figures"]
    lines = [
        "| method (recipe) | seeds | precision | machine | test, final epoch | test, best epoch "
        "(selected on test) | validation | hours per run | published (other data and code) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    sources = []
    for i, (method, (label, recipe)) in enumerate(FULL_LENGTH.items(), 1):
        p = pub.get(PUBLISHED[method])
        published = "-" if p is None else f"{_published(p)} [{i}]"
        if p is not None:
            sources.append(f"- [{i}] {p['method']}: {p['source']}.")
        v = full_length_records(records, method)
        if v is None:
            lines.append(f"| {label} (`{recipe}`) | {_seeds(v)} | | | | | | | {published} |")
            continue
        n = len(v.items)
        precisions = _distinct(_precision(r, nm) for r, nm in zip(v.items, v.names))
        hours = [x / 3600 for x in _numbers(v, "wall_seconds")]
        lines.append(
            f"| {label} (`{recipe}`) | {_seeds(v)} | {precisions} | {_machines(v)} "
            f"| {_with_n(_numbers(v, 'final.acc'), n)} "
            f"| {_with_n(_numbers(v, 'best_test_selected.acc'), n)} "
            f"| {_with_n(_numbers(v, 'val.acc'), n)} "
            f"| {_with_n(hours, n, scale=1.0, digits=1)} | {published} |"
        )
    return [*lines, "", *sources]


def table_full_length_groups(records: Records) -> list[str]:
    lines = [
        "| method | seeds | classes [0,3) | [3,7) | [7,10) | many (> 100 images) | medium (20-100) "
        "| few (< 20) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, (label, _) in FULL_LENGTH.items():
        v = full_length_records(records, method)
        if v is None:
            lines.append(f"| {label} | {_seeds(v)} | | | | | | |")
            continue
        n = len(v.items)
        cells = []
        for key in ("many_idx", "medium_idx", "few_idx", "many", "medium", "few"):
            xs = _numbers(v, f"final.{key}")
            cells.append(_with_n(xs, n) if xs else "no class")
        lines.append(f"| {label} | {_seeds(v)} | {' | '.join(cells)} |")
    return lines


def _machine(record: dict, name: str) -> str:
    if record.get("machine"):
        return str(record["machine"])
    legacy = next((m for pat, m in LEGACY_MACHINE.items() if fnmatch(name, pat)), None)
    return legacy or f"{record.get('device', '?')} (model not recorded)"


def _machines(v: Values) -> str:
    return _distinct((_machine(r, n) for r, n in zip(v.items, v.names)), each=_short_machine)


def _short_machine(name: str) -> str:
    """A CPU's model string without its trademark signs, generic words and core count (every
    run here had two): ``"Intel(R) Xeon(R) Processor"`` as ``"Intel Xeon"``, the legacy
    ``"2-core AMD EPYC"`` as the recorded ``"AMD EPYC"``."""
    name = re.sub(r"\((R|TM|r|tm)\)|^\d+-core\s+", "", name)
    return " ".join(re.sub(r"\s+(Processor|CPU)\b", "", name).split())


def _distinct(values, each: Callable[[str], str] = str) -> str:
    """Each value once (as ``each`` writes it), sorted; a run's ``"A, then B"`` (it ran on
    both) counts as A and B."""
    return ", ".join(sorted({each(part) for v in values for part in v.split(", then ")}))


def _published(p: dict) -> str:
    return "not transcribed" if p.get("acc") is None else f"{p['acc']:g}"


# -- the other tables ------------------------------------------------------------------------


def _rows(records: Records, group: str) -> list[dict]:
    rec = records.read(GROUPS[group])
    if not isinstance(rec.get("rows"), list):
        raise FigureError(f"record {GROUPS[group]} has no rows (a sweep's --collect --json)")
    return rec["rows"]


def _pm_row(row: dict, key: str, scale: float = 100.0, digits: int = 2, std: bool = True) -> str:
    mean, sd = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "n/a"
    text = _num(mean * scale, f".{digits}f")
    return f"{text} ± {_num(sd * scale, f'.{digits}f')}" if std and sd is not None else text


def table_digits_compare(records: Records) -> list[str]:
    rec = records.read(GROUPS["digits"])
    lines = [
        "| method | head | loss | overall | many | medium | few | NC3 | minority collapse W "
        "| training s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rec["methods"]:
        f, c = m["final"], m["collapse"]["train"]
        lines.append(
            f"| `{m['method']}` | {m['head']} | {m['loss']} | {_num(f['acc'] * 100, '.2f')} "
            f"| {_num(f['many'] * 100, '.2f')} | {_num(f['medium'] * 100, '.2f')} "
            f"| {_num(f['few'] * 100, '.2f')} | {_num(c['nc3'], '.3f')} "
            f"| {_num(c['minority_collapse_w'], '.3f')} | {_num(m['train_seconds'], '.1f')} |"
        )
    return lines


def _sweep_table(records: Records, group: str, pm_keys: set[str]) -> list[str]:
    cols = [
        ("overall", "acc", 100, 2),
        ("many", "many", 100, 2),
        ("medium", "medium", 100, 2),
        ("few", "few", 100, 2),
        ("NC1", "nc1", 1, 3),
        ("NC2 means", "nc2_etf_error", 1, 3),
        ("NC3", "nc3", 1, 3),
        ("MC means", "minority_collapse_means", 1, 3),
        ("MC W", "minority_collapse_w", 1, 3),
    ]
    lines = [
        "| method | " + " | ".join(c[0] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for row in _rows(records, group):
        cells = [_pm_row(row, k, s, d, std=k in pm_keys) for _, k, s, d in cols]
        lines.append(f"| `{row['method']}` | " + " | ".join(cells) + " |")
    return lines


def table_digits_sweep(records: Records) -> list[str]:
    return _sweep_table(records, "digits_sweep", {"acc", "medium", "few", "nc3"})


def table_digits_allnc(records: Records) -> list[str]:
    lines = [
        "| protocol | method | overall | few | NC3 | MC means | MC W |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, label in (
        ("digits_sweep", "exponential, 30 epochs"),
        ("digits_150", "exponential, 150 epochs"),
        ("digits_step", "step profile (ratio 50), 150 epochs"),
    ):
        for row in _rows(records, group):
            if row["method"] not in ("ce", "etf_dr", "allnc"):
                continue
            lines.append(
                f"| {label} | `{row['method']}` | {_pm_row(row, 'acc')} | {_pm_row(row, 'few')} "
                f"| {_pm_row(row, 'nc3', 1, 3)} | {_pm_row(row, 'minority_collapse_means', 1, 3)} "
                f"| {_pm_row(row, 'minority_collapse_w', 1, 3, std=False)} |"
            )
    return lines


def table_row7(records: Records) -> list[str]:
    labels = {
        "etf_dr": "ETF + DR",
        "ce": "CE",
        "la": "LA (logit-adjusted loss)",
        "bs": "BS (balanced softmax)",
        "focal": "focal",
        "ldam_drw": "LDAM-DRW",
    }
    lines = [
        "| method | test | test, classes 7-9 | val | val @10% | val @30% | NC3 | MC of W |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(records, "row7"):
        lines.append(
            f"| {labels.get(row['method'], row['method'])} | {_pm_row(row, 'acc')} "
            f"| {_pm_row(row, 'few_idx')} | {_pm_row(row, 'val_acc')} "
            f"| {_pm_row(row, 'val_acc_at_10')} | {_pm_row(row, 'val_acc_at_30')} "
            f"| {_pm_row(row, 'nc3', 1, 3)} | {_pm_row(row, 'minority_collapse_w', 1, 3, std=False)} |"
        )
    return lines


def _group_pm(v: Values, path: str, scale: float = 100.0, digits: int = 2) -> str:
    return _with_n(_numbers(v, path), len(v.items), scale=scale, digits=digits)


def table_speed(records: Records) -> list[str]:
    official = records.group(GROUPS["official"], label="official")
    off_wall = _numbers(official, "wall_seconds")
    lines = [
        "| recipe | epochs | precision | wall s | test % (seeds 0, 1, 2) | test, classes 7-9 % "
        "| validation % | time ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("official `cifar10_lt_r100_etf_dr`, seed 0", "official"),
        ("`cifar10_lt_r100_fast` (t27)", "fast"),
        ("the same at 60 epochs (t25)", "fast_t25"),
        ("t25 with the paper's per-batch DR class weights (t16)", "fast_t16"),
    ]
    for label, group in rows:
        v = records.group(GROUPS[group], label=group)
        epochs = ", ".join(sorted({str(r["epochs"]) for r in v.items}))
        precision = _distinct(_precision(r, n) for r, n in zip(v.items, v.names))
        wall, val = _numbers(v, "wall_seconds"), _numbers(v, "val.acc")
        ratio = "1" if group == "official" else f"{off_wall[0] / _mean(wall):.1f}x"
        lines.append(
            f"| {label} | {epochs} | {precision} | {_with_seeds(wall, 1.0, 0)} "
            f"| {_with_seeds(_numbers(v, 'final.acc'))} | {_group_pm(v, 'final.few_idx')} "
            f"| {_with_seeds(val) if val else 'not in the record'} | {ratio} |"
        )
    return lines


def _with_seeds(xs: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """mean ± std (each seed's value), or the one value; thousands separated."""
    spec = f",.{digits}f"
    if len(xs) < 2:
        return _num(xs[0] * scale, spec) if xs else "-"
    each = "; ".join(_num(x * scale, spec) for x in xs)
    return f"{_num(_mean(xs) * scale, spec)} ± {_num(_std(xs, '') * scale, spec)} ({each})"


def table_fast_h200(records: Records) -> list[str]:
    v = records.group(GROUPS["fast_h200"], label="fast_h200")
    machines = _machines(v)
    return [
        "| recipe | epochs | machine | wall s | test % (seeds 0, 1, 2) | test, classes 7-9 % "
        "| validation % |",
        "|---|---:|---|---:|---:|---:|---:|",
        f"| `cifar10_lt_r100_fast` as t16 | {v.items[0]['epochs']} | {machines} "
        f"| {_with_seeds(_numbers(v, 'wall_seconds'), 1.0, 0)} "
        f"| {_with_seeds(_numbers(v, 'final.acc'))} | {_group_pm(v, 'final.few_idx')} "
        f"| {_group_pm(v, 'val.acc')} |",
    ]


def table_published(records: Records) -> list[str]:
    pub = records.read(GROUPS["published"])["figures"]
    lines = [
        "| dataset | method | 100 | 50 | 10 | source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for ds, label in (("cifar10", "CIFAR-10-LT"), ("cifar100", "CIFAR-100-LT")):
        cells = []
        for ratio in (100, 50, 10):
            p = pub.get(f"{ds}_r{ratio}_ce_mixup")
            cells.append("-" if p is None else f"{p['acc']:.1f}")
        src = pub[f"{ds}_r100_ce_mixup"]
        lines.append(f"| {label} | {src['method']} | {' | '.join(cells)} | {src['source']} |")
    etf = pub["cifar10_r100_etf_dr"]
    lines.append(f"| both | {etf['method']} | not transcribed | | | {etf['source']} |")
    return lines


def table_cifar_runs(records: Records) -> list[str]:
    lines = [
        "| run | precision | machine | overall | [0,3) | [3,7) | [7,10) | wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, group in (
        ("ETF + DR, official recipe (`cifar10_lt_r100_etf_dr`), 200 epochs", "official"),
        ("ETF + DR, the fast recipe (`cifar10_lt_r100_fast`), 72 epochs", "fast"),
    ):
        v = records.group(GROUPS[group], label=group)
        seeds = ", ".join(n.rsplit("seed", 1)[1] for n in v.names)
        seeds = f"seed {seeds}" if len(v.names) == 1 else f"seeds {seeds}"
        precision = _distinct(_precision(r, n) for r, n in zip(v.items, v.names))
        cells = [_group_pm(v, f"final.{k}") for k in ("acc", "many_idx", "medium_idx", "few_idx")]
        minutes = _mean(_numbers(v, "wall_seconds")) / 60
        wall = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
        lines.append(
            f"| {label}, {seeds} | {precision} | {_machines(v)} | {' | '.join(cells)} | {wall} |"
        )
    return lines


def table_convergence(records: Records) -> list[str]:
    lines = [
        "| method | after 3 epochs (10 %) | after 9 epochs (30 %) | after 30 epochs |",
        "|---|---:|---:|---:|",
    ]
    for method, label in (("etf_dr", "ETF + DR"), ("ce", "learnable CE")):
        row = _get(_rows(records, "row7"), method)
        cells = [_pm_row(row, k) for k in ("val_acc_at_10", "val_acc_at_30", "val_acc")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def table_collapse(records: Records) -> list[str]:
    lines = [
        "| run | machine | NC1 | NC2 means | NC2 classifier | NC3 | MC means | MC classifier |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("nc1", "nc2_etf_error", "w_etf_error", "nc3", "minority_collapse_means",
            "minority_collapse_w")  # fmt: skip
    for label, group in (
        ("ETF + DR, official recipe, 200 epochs, seed 0", "official"),
        ("ETF + DR, fast recipe at 60 epochs (t25), 3 seeds", "fast_t25"),
        ("ETF + DR, the same with per-batch class weights (t16), 3 seeds", "fast_t16"),
    ):
        v = records.group(GROUPS[group], label=group)
        cells = [_group_pm(v, f"collapse.train.{k}", 1.0, 3) for k in keys]
        machine = _machines(v)
        lines.append(f"| {label} | {machine} | {' | '.join(cells)} |")
    for method, label in (("etf_dr", "ETF + DR"), ("ce", "learnable CE")):
        row = _get(_rows(records, "row7"), method)
        cells = [_pm_row(row, k, 1.0, 3) for k in keys]
        lines.append(
            f"| {label}, official recipe at 30 epochs, 3 seeds | one H200 | {' | '.join(cells)} |"
        )
    for method, (label, _) in FULL_LENGTH.items():
        v = full_length_records(records, method)
        if v is None or (method == "etf_dr" and len(v.items) < 2):
            continue  # ETF + DR seed 0 is the first row
        cells = [_group_pm(v, f"collapse.train.{k}", 1.0, 3) for k in keys]
        lines.append(
            f"| {label}, 200 epochs, seeds: {_seeds(v)} | {_machines(v)} | {' | '.join(cells)} |"
        )
    return lines


def table_throughput(records: Records) -> list[str]:
    native = records.read(GROUPS["throughput"])
    avx2 = records.read(GROUPS["throughput_avx2"])
    rows = [
        ("plain", "plain loop, fp32 NCHW"),
        ("engine", "engine (bf16 autocast where the CPU has bf16, channels_last)"),
        ("engine_fp32", "engine, fp32, channels_last"),
        ("engine_fp32_nchw", "engine, fp32, NCHW"),
    ]
    head = (
        f"| contender | native ({', '.join(native['cpu_flags_bf16']) or 'no bf16'}; "
        f"the engine in {native['engine_precision']}) | limited to AVX2 (`--isa avx2`; "
        f"the engine in {avx2['engine_precision']}) |"
    )
    lines = [head, "|---|---:|---:|"]
    for key, label in rows:
        cells = []
        for rec in (native, avx2):
            rate = rec["images_per_s"].get(key)
            if rate is None:  # the engine already trains in fp32 without bf16
                same = key == "engine_fp32" and rec["engine_precision"] == "fp32"
                cells.append("= the engine row" if same else "-")
                continue
            ratio = rec["ratios_vs_plain"].get(key)
            cells.append(f"{rate:.1f} img/s" + ("" if ratio is None else f" ({ratio:.2f}x)"))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


# -- many classes -------------------------------------------------------------------------------

#: the validation trials at 100 classes, r = 0.01, by the hypothesis each tests:
#: (hypothesis, [(trial, what it changes against the row it is read against)])
MANY_TRIALS = [
    (
        "the gap",
        [
            ("ce", "learnable CE on the shared recipe"),
            ("dr_global", "ETF + DR as the CIFAR-10 fast recipe has it (1/n_c weights)"),
        ],
    ),
    (
        "the class weights",
        [
            ("dr_batch", "weights by count in the mini-batch (the paper's)"),
            ("dr_none", "no class weights"),
        ],
    ),
    ("the head or the loss", [("etf_ce", "the fixed ETF with cross-entropy (scale 10)")]),
    (
        "the step size",
        [
            ("dr_none_x10", "no weights, DR x 10 (lr 1, wd 5e-5: the same SGD steps)"),
            ("dr_none_wd", "no weights, weight decay / 10 only"),
            ("dr_none_e60", "no weights, twice the epochs"),
            ("dr_global_x10", "1/n_c weights, DR x 10"),
        ],
    ),
    ("mixup", [("dr_none_nomix", "no weights, no mixup")]),
    ("feature normalisation", [("dr_none_bn", "no weights, BN without the L2 norm")]),
    (
        "the fix: scale and weights",
        [
            ("dr_s10_global_p05", "scale 10, weights 1/sqrt(n_c) from the start"),
            ("dr_s10_global_drw8", "scale 10, 1/n_c weights from epoch 8"),
            ("dr_s10_global_drw10", "scale 10, 1/n_c weights from epoch 10"),
            ("dr_s10_global_drw15", "scale 10, 1/n_c weights from epoch 15"),
            ("dr_s10_global_drw24", "scale 10, 1/n_c weights from epoch 24"),
        ],
    ),
    (
        "CE's own search",
        [
            ("ce_lr02", "lr 0.2"),
            ("ce_lr005", "lr 0.05"),
            ("ce_wd1e-4", "weight decay 1e-4"),
            ("ce_wd1e-3", "weight decay 1e-3"),
            ("ce_nomix", "no mixup"),
            ("ce_mix02", "mixup alpha 0.2"),
            ("ce_kaiming", "classifier initialised Kaiming-normal"),
            ("ce_drw8", "deferred re-weighting from epoch 8"),
            ("ce_drw15", "deferred re-weighting from epoch 15"),
            ("ce_drw24", "deferred re-weighting from epoch 24"),
            ("ce_drw27", "deferred re-weighting from epoch 27"),
            ("ce_lr02_drw24", "lr 0.2, deferred re-weighting from epoch 24"),
            ("ce_mix02_drw24", "mixup alpha 0.2, deferred re-weighting from epoch 24"),
            ("ce_drs24", "class-balanced sampling from epoch 24"),
        ],
    ),
]


def _trial_rows(records: Records, group: str) -> dict[tuple[str, int], dict]:
    return {(r["trial"], r["seed"]): r for r in _rows(records, group)}


def _pct(x, digits: int = 2, scale: float = 100.0) -> str:
    return "-" if x is None else _num(x * scale, f".{digits}f")


def table_many_classes_trials(records: Records) -> list[str]:
    rows = _trial_rows(records, "tin_trials")
    lines = [
        "| hypothesis | trial | change | val (class mean) | test | many | medium | few "
        "| train NC1 | train NC3 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for hypothesis, trials in MANY_TRIALS:
        for trial, change in trials:
            r = rows.get((trial, 0))
            if r is None:
                raise FigureError(f"{GROUPS['tin_trials']} has no trial {trial} (seed 0)")
            cells = [_pct(r[k]) for k in ("val_bal", "test", "many", "medium", "few")]
            cells += [_pct(r["nc1"], 1, 1.0), _pct(r["nc3"], 2, 1.0)]
            lines.append(f"| {hypothesis} | `{trial}` | {change} | " + " | ".join(cells) + " |")
    return lines


#: the K sweep: method label -> trial
MANY_K = {
    "learnable CE": "ce",
    "ETF + DR, 1/n_c weights": "dr_global",
    "ETF + DR, no weights": "dr_none",
    "ETF + DR, no weights, x 10": "dr_none_x10",
    "ETF + DR, 1/n_c weights, x 10": "dr_global_x10",
    "fixed ETF with CE": "etf_ce",
}


def _k_cell(rows: dict, trial: str, key: str, scale: float = 100.0, digits: int = 1) -> str:
    xs = [r[key] for (t, _), r in rows.items() if t == trial and r.get(key) is not None]
    if not xs:
        return "-"
    text = _num(_mean(xs) * scale, f".{digits}f")
    return text if len(xs) == 1 else f"{text} (n = {len(xs)})"


def table_many_classes_k(records: Records) -> list[str]:
    by_k = {
        10: _trial_rows(records, "tin_k10"),
        25: _trial_rows(records, "tin_k25"),
        100: _trial_rows(records, "tin_trials"),
    }
    probe = _trial_rows(records, "tin_probe")
    lines = [
        "| method | test, K = 10 | test, K = 25 | test, K = 100 | step at init, K = 10 "
        "| step at init, K = 100 | step at the end, K = 10 | step at the end, K = 100 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, trial in MANY_K.items():
        cells = [_k_cell(by_k[k], trial, "test") for k in (10, 25, 100)]
        for when in ("init", "final"):
            cells += [
                _k_cell(by_k[10], trial, f"step_{when}", 1000.0, 2),
                _k_cell(probe, trial, f"step_{when}", 1000.0, 2),
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def table_many_classes_final(records: Records) -> list[str]:
    lines = [
        "| imbalance | method (recipe) | seeds | val (class mean) | test | many | medium | few "
        "| train NC1 | train NC3 | minutes per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ratio in (100, 10):
        for method, label in (("dr", "ETF + DR"), ("ce", "learnable CE")):
            group = f"tin_r{ratio}_{method}"
            v = records.group(GROUPS[group], label=group)
            recipe = f"tinyimagenet100_lt_r{ratio}_{'fast' if method == 'dr' else 'ce'}"
            n = len(v.items)
            cells = [_group_pm(v, "val_bal")]
            # a group with no class in it (no class under 20 images at r = 0.1) has no figure
            cells += [
                _group_pm(v, f"final.{k}") if _numbers(v, f"final.{k}") else "-"
                for k in ("acc", "many", "medium", "few")
            ]
            cells += [
                _with_n(_numbers(v, "collapse.train.nc1"), n, scale=1.0, digits=1),
                _with_n(_numbers(v, "collapse.train.nc3"), n, scale=1.0, digits=2),
                _with_n(_numbers(v, "wall_seconds"), n, scale=1 / 60, digits=0),
            ]
            lines.append(
                f"| r = {1 / ratio:g} | {label} (`{recipe}`) | {n} | " + " | ".join(cells) + " |"
            )
    return lines


TABLES: dict[str, Callable[[Records], list[str]]] = {
    "full-length": table_full_length,
    "full-length-groups": table_full_length_groups,
    "digits-compare": table_digits_compare,
    "digits-sweep": table_digits_sweep,
    "digits-allnc": table_digits_allnc,
    "row7": table_row7,
    "speed": table_speed,
    "fast-h200": table_fast_h200,
    "published": table_published,
    "cifar-runs": table_cifar_runs,
    "convergence": table_convergence,
    "throughput": table_throughput,
    "collapse": table_collapse,
    "many-classes-trials": table_many_classes_trials,
    "many-classes-k": table_many_classes_k,
    "many-classes-final": table_many_classes_final,
}


# -- documents -------------------------------------------------------------------------------


@dataclass
class Stale:
    where: str
    what: str
    found: str
    want: str


def process(
    path: Path, records: Records, *, write: bool, listing: list | None = None
) -> list[Stale]:
    """Check (or rewrite) the spans and tables of one document; the stale ones."""
    try:
        lines = path.read_text().split("\n")
    except OSError as exc:
        raise FigureError(f"cannot read {path}: {exc.strerror}") from None
    rel = _rel(path)
    out, stale, i, fenced = [], [], 0, False
    while i < len(lines):
        line, where = lines[i], f"{rel}:{i + 1}"
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```"):  # code shows markers, never holds one
            out.append(line)
            i += 1
            continue
        opened = OPEN_TABLE.match(line)
        if opened:
            name = opened["name"]
            end = next((j for j in range(i + 1, len(lines)) if CLOSE_TABLE.match(lines[j])), None)
            if end is None:
                raise FigureError(f"{where}: table {name} has no <!-- /table -->")
            if name not in TABLES:
                raise FigureError(f"{where}: unknown table {name!r} (known: {', '.join(TABLES)})")
            try:
                body = TABLES[name](records)
                want = ["", *(opened["indent"] + x if x else x for x in body), ""]
            except FigureError as exc:
                raise FigureError(f"{where}: table {name}: {exc}") from None
            found = lines[i + 1 : end]
            if found != want:
                diff = next((k for k, (a, b) in enumerate(zip(found, want)) if a != b), None)
                k = min(len(found), len(want)) if diff is None else diff
                stale.append(Stale(f"{rel}:{i + 2 + k}", f"table {name}",
                                   found[k] if k < len(found) else "(missing line)",
                                   want[k] if k < len(want) else "(no line)"))  # fmt: skip
            if listing is not None:
                listing.append((where, f"table {name}", f"{len(want) - 2} lines"))
            out += [line, *(want if write else found), lines[end]]
            i = end + 1
            continue
        prose = CODE_SPAN.sub("", line)
        if "<!-- table" in prose or "<!-- /table" in prose:
            raise FigureError(
                f"{where}: a table marker that is not <!-- table NAME --> alone on its line, or a <!-- /table --> without its opening"
            )
        if prose.lstrip().startswith("<!-- fig"):
            raise FigureError(
                f"{where}: a line that starts with a figure is read as an HTML block by Markdown "
                "(the rest of its paragraph breaks off): put a word before it"
            )
        if "<!-- fig" in prose and not SPAN.search(prose):
            raise FigureError(f"{where}: a <!-- fig ... --> without its <!-- /fig --> on the line")

        out.append(_spans(line, where, records, write, stale, listing))
        i += 1
    if write and out != lines:
        path.write_text("\n".join(out))
    return stale


def _spans(line: str, where: str, records: Records, write: bool, stale: list, listing) -> str:
    """The line with each span's figure checked (and rewritten if ``write``)."""

    def span(m: re.Match) -> str:
        try:
            want = figure(records, m["expr"])
        except FigureError as exc:
            raise FigureError(f"{where}: {m['expr'].strip()}: {exc}") from None
        if m["text"] != want:
            stale.append(Stale(where, m["expr"].strip(), m["text"], want))
        if listing is not None:
            listing.append((where, m["expr"].strip(), want))
        return f"<!-- fig {m['expr']} -->{want if write else m['text']}<!-- /fig -->"

    parts = CODE_SPAN.split(line)  # code spans (odd parts) show markers, never hold one
    return "".join(p if k % 2 else SPAN.sub(span, p) for k, p in enumerate(parts))


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


#: accuracies, times and ratios: what must sit in a span (or a generated table)
UNMARKED = re.compile(
    r"\d ?± ?\d|\b\d+(?:\.\d+)? ?%|\b\d+(?:\.\d+)?x\b|\b\d+(?:\.\d+)? times\b"
    r"|\b\d[\d,]*(?:\.\d+)? ?(?:s|seconds|min|minutes|h|hours)\b"
)
HIDDEN = re.compile(
    r"<!-- fig .*? -->.*?<!-- /fig -->|<!--.*?-->|``[^`]*``|`[^`\n]*`|\]\([^)]*\)", re.S
)


def unmarked(path: Path) -> list[tuple[str, str]]:
    """Figures written by hand: outside spans, tables, code and comments."""
    text = path.read_text()
    text = re.sub(r"<!-- table [\w-]+ -->.*?<!-- /table -->", _blank, text, flags=re.S)
    text = re.sub(r"^```.*?^```", _blank, text, flags=re.S | re.M)
    text = re.sub(r"^ {6}.*$", _blank, text, flags=re.M)  # code indented inside a list item
    text = HIDDEN.sub(_blank, text)
    found = []
    for m in UNMARKED.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        found.append((f"{_rel(path)}:{line}", m.group(0)))
    return found


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        sys.stderr.write(f"figures: {message} (see --help)\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="list stale figures (the default)")
    mode.add_argument("--write", action="store_true", help="rewrite every span and table")
    mode.add_argument("--list", action="store_true", help="every figure and its value")
    mode.add_argument("--unmarked", action="store_true", help="figures written outside spans")
    p.add_argument("--records", default=str(RECORDS), help="the records folder")
    p.add_argument("files", nargs="*", help=f"Markdown files (default: {', '.join(DOCS)})")
    args = p.parse_args(argv)
    files = [Path(f) for f in args.files] if args.files else [ROOT / d for d in DOCS]
    records = Records(Path(args.records))
    if not records.folder.is_dir():
        print(f"figures: no records folder {records.folder}", file=sys.stderr)
        return 2
    try:
        if args.unmarked:
            found = [u for f in files for u in unmarked(f)]
            for where, text in found:
                print(f"{where}: {text!r} is not generated from a record")
            return 1 if found else 0
        listing: list | None = [] if args.list else None
        stale = [s for f in files for s in process(f, records, write=args.write, listing=listing)]
    except FigureError as exc:
        print(f"figures: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"figures: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if listing is not None:
        for where, what, value in listing:
            print(f"{where}: {what} = {value}")
        print(f"records read: {', '.join(sorted(records.used))}")
        return 0
    if args.write:
        print(f"figures: {len(stale)} rewritten in {len(files)} files")
        return 0
    for s in stale:
        print(f"{s.where}: {s.what}: the text says {s.found!r}, the records give {s.want!r}")
    if stale:
        print(f"figures: {len(stale)} stale; `python benchmarks/figures.py --write` rewrites them")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
