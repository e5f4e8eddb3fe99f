"""``ncollapse analyze``: plots and a summary from run directories, or metrics of own features."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..jsonsafe import dumps


def _one_line_error(parser: argparse.ArgumentParser):
    def error(message: str):
        parser.exit(2, f"ncollapse: error: {parser.prog}: {message} (see {parser.prog} --help)\n")

    return error


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="plot neural-collapse curves, cosine matrices and per-class accuracy of run(s)",
        description=(
            "Read RUN_DIR (and optionally RUN_DIR2 to overlay a second run) and write PNG plots "
            "and analysis.md: NC1-NC4 against epoch, cosine matrices of class means and "
            "classifier rows sorted by class size, per-class accuracy and mean norm against "
            "class size. With --features, measure collapse on your own arrays (an .npz with "
            "'features' (N, d), 'labels' (N,), optional 'classifier' (K, d) and 'bias' (K,))."
        ),
    )
    p.error = _one_line_error(p)
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="one or two run directories")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: RUN_DIR for one run, RUN_DIR/compare_<RUN_DIR2 name> "
        "for two; with --features and no RUN_DIR, the folder holding FILE.npz)",
    )
    p.add_argument("--features", metavar="FILE.npz", help="analyse your own features")
    p.add_argument(
        "--tail",
        metavar="CLASSES",
        help="with --features: the tail classes of the minority-collapse indices, e.g. 7,8,9 "
        "(default: from --train-counts, else the smallest classes of FILE.npz's labels)",
    )
    p.add_argument(
        "--train-counts",
        metavar="COUNTS",
        help="with --features: the training set's per-class counts, e.g. 5000,2997,...,50; "
        "the tail is its few-shot classes, else its smallest third (use this for test features)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.set_defaults(func=run)
    return p


def _ints(text: str, option: str, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(
            f"bad {option} {text!r}: give a comma list of integers, e.g. {example}"
        ) from None
    if any(v < 0 for v in values):
        raise UserError(f"bad {option} {text!r}: values must be >= 0")
    if len(values) > 100_000:
        raise UserError(f"bad {option}: {len(values)} values, at most 100000")
    return values


def run(args: argparse.Namespace) -> int:
    from ..report import analyze_features, analyze_runs

    if len(args.run_dirs) > 2:
        raise UserError(f"analyze takes at most two run directories, got {len(args.run_dirs)}")
    if not args.run_dirs and not args.features:
        raise UserError("give a run directory (RUN_DIR) or a features file (--features FILE.npz)")
    if (args.tail or args.train_counts) and not args.features:
        raise UserError("--tail and --train-counts apply to --features FILE.npz")
    if args.tail and args.train_counts:
        raise UserError("give --tail or --train-counts, not both")
    tail = _ints(args.tail, "--tail", "7,8,9") if args.tail else None
    train_counts = (
        _ints(args.train_counts, "--train-counts", "5000,2997,1796,1077,645,387,232,139,83,50")
        if args.train_counts
        else None
    )
    result: dict = {}
    if args.run_dirs:
        result["runs"] = analyze_runs(args.run_dirs, args.out)
    if args.features:
        if args.out:
            out = Path(args.out)
        elif args.run_dirs:
            out = Path(result["runs"]["out_dir"])
        else:
            out = Path(args.features).resolve().parent
        result["features"] = analyze_features(
            args.features, out, tail_classes=tail, train_counts=train_counts
        )
    if args.json:
        print(dumps(result, indent=1, default=str))
    else:
        for part in result.values():
            print(f"wrote to {part['out_dir']}:")
            for f in part["files"]:
                print(f"  {Path(f).name}")
    return 0
