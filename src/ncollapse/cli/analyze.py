"""``ncollapse analyze``: plots and a summary from run directories, or metrics of own features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError


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
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="one or two run directories")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the run directory)")
    p.add_argument("--features", metavar="FILE.npz", help="analyse your own features")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import analyze_features, analyze_runs

    if len(args.run_dirs) > 2:
        raise UserError(f"analyze takes at most two run directories, got {len(args.run_dirs)}")
    if not args.run_dirs and not args.features:
        raise UserError("give a run directory (RUN_DIR) or a features file (--features FILE.npz)")
    result: dict = {}
    if args.run_dirs:
        result["runs"] = analyze_runs(args.run_dirs, args.out)
    if args.features:
        out = args.out or (
            Path(args.run_dirs[0]) if args.run_dirs else Path(args.features).resolve().parent
        )
        result["features"] = analyze_features(args.features, out)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        for part in result.values():
            print(f"wrote to {part['out_dir']}:")
            for f in part["files"]:
                print(f"  {Path(f).name}")
    return 0
