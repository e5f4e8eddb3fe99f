"""``ncollapse sweep``: a grid of methods x imbalance ratios x seeds on one recipe, resumable,
with results.md / results.csv (mean and standard deviation over seeds). See docs/sweep.md."""

from __future__ import annotations

import argparse
import sys

from .common import add_schedule_options, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..build import METHODS

    p = sub.add_parser(
        "sweep",
        help="train a grid of methods x imbalance ratios x seeds; tabulate mean ± std over seeds",
        description=(
            "Train every method at every imbalance ratio with every seed, one run after another, "
            "into one sweep directory, and write results.md and results.csv there: per method and "
            "imbalance, mean ± std over seeds of final-epoch overall/many/medium/few accuracy, the "
            "main collapse metrics and the training time. Resumable: rerun the same command after "
            "an interruption and finished runs are skipped, an interrupted one continues from its "
            "checkpoint. Without --recipe it runs on the embedded long-tailed digits."
        ),
        epilog=(
            "Rerunning into the same directory may add or drop methods, ratios or seeds (finished "
            "runs are reused); a different recipe, --epochs, --set or --subset-seed is refused "
            "because the runs would not be comparable: use another --out. Several processes may "
            "run the same command on one directory at once (one per GPU or core): each cell is "
            "claimed with a lock file and trained by one of them only."
        ),
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="base recipe (file or name in configs/, e.g. cifar10_lt); default: digits",
    )
    p.add_argument(
        "--methods",
        default="ce,etf_dr",
        help=f"comma-separated method presets, from: {', '.join(METHODS)} (default: ce,etf_dr)",
    )
    p.add_argument(
        "--imbalance",
        default=None,
        help=(
            "comma-separated imbalance values: a value > 1 is an imbalance RATIO (100 = n_max/n_min), "
            "a value <= 1 an imbalance FACTOR r = 1/ratio (0.01); e.g. 100,10 or 0.01,0.1 "
            "(default: the recipe's)"
        ),
    )
    p.add_argument(
        "--seeds",
        default="0,1",
        help="comma-separated training seeds (initialisation, data order); default: 0,1",
    )
    p.add_argument(
        "--subset-seed",
        type=int,
        default=None,
        help="seed of the long-tail subset, the same for every run (default: the recipe's, 0)",
    )
    add_schedule_options(p, scope=" for every run")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--out", default=None, help="sweep directory (default: runs/sweep-<recipe>)")
    p.add_argument(
        "--json", action="store_true", help="print the aggregated rows as JSON (not the table)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sweep import SweepSpec, format_markdown, run_sweep

    spec = SweepSpec(
        methods=args.methods,
        seeds=args.seeds,
        imbalance=args.imbalance,
        recipe=args.recipe,
        epochs=args.epochs,
        subset_seed=args.subset_seed,
        overrides=list(args.overrides),
        device=args.device,
    )
    result = run_sweep(spec, args.out, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print_json({"out_dir": result["out_dir"], "spec": result["spec"], "rows": result["rows"]})
    else:
        print()
        print(format_markdown(result["rows"], result["spec"]), end="")
        print(f"\nwritten: {result['out_dir']}/results.md and results.csv")
    return 0
