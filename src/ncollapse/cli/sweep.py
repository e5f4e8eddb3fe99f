"""``ncollapse sweep``: a grid of methods x imbalance ratios x seeds on one recipe, resumable,
with results.md / results.csv (mean and standard deviation over seeds). See docs/sweep.md."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import UserError
from .common import add_schedule_options, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..methods import METHODS

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
            "claimed with a lock file and trained by one of them only. On a cluster, run one cell "
            "per array job with --cell $SLURM_ARRAY_TASK_ID (see --list), then --collect."
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
        help=f"comma-separated method presets, from: {', '.join(METHODS.names())} (default: ce,etf_dr)",
    )
    grid = p.add_mutually_exclusive_group()
    grid.add_argument(
        "--imbalance",
        default=None,
        help="comma-separated imbalance FACTORS r in (0, 1], e.g. 0.01,0.1 (default: the recipe's)",
    )
    grid.add_argument(
        "--ratio",
        default=None,
        help="comma-separated imbalance RATIOS n_max/n_min >= 1, e.g. 100,10 (r = 1/ratio)",
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
        "--pack",
        type=int,
        default=1,
        metavar="N",
        help="train up to N cells that share a backbone (seeds, or methods on one network) at a "
        "time in this process, as one batched model; the others one at a time (default: 1)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the aggregated rows as JSON (not the table)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--list", action="store_true", help="print the grid's cells with their index and status"
    )
    mode.add_argument(
        "--cell",
        default=None,
        metavar="I",
        help="run only cell I (an index from --list, or a cell name): one cluster array job",
    )
    mode.add_argument(
        "--collect",
        action="store_true",
        help="write results.md/csv from the finished cells and list the missing ones; trains nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sweep import (
        SweepSpec,
        format_markdown,
        list_cells,
        missing_cells,
        parse_ratios,
        read_spec,
        run_sweep,
        stale_cells,
        write_results,
    )

    if args.pack < 1:
        raise UserError(f"--pack takes a number of runs >= 1, got {args.pack}")
    if args.pack > 1 and args.cell is not None:
        raise UserError("--pack trains several cells at once and --cell one: drop one of them")
    imbalance = parse_ratios(args.ratio) if args.ratio is not None else args.imbalance
    spec = SweepSpec(
        methods=args.methods,
        seeds=args.seeds,
        imbalance=imbalance,
        recipe=args.recipe,
        epochs=args.epochs,
        subset_seed=args.subset_seed,
        overrides=list(args.overrides),
        device=args.device,
        shared_recipe=args.shared_recipe,
    )
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{spec.recipe_label()}"
    if args.list:
        cells = list_cells(spec, out)
        if args.json:
            print_json(cells)
        else:
            for c in cells:
                note = f" ({c['note']})" if c.get("note") else ""
                print(f"{c['index']:>4}  {c['cell']:<32} {c['status']}{note}")
        return 0
    if args.collect:
        spec_json = read_spec(out)
        rows = write_results(out, spec_json)  # first: a damaged run is an error, not a warning
        for note in stale_cells(out, spec_json):
            warnings.warn(note, stacklevel=1)
        missing = missing_cells(out, spec_json)
        result = {"out_dir": str(out), "spec": spec_json, "rows": rows, "missing": missing}
    else:
        result = run_sweep(
            spec, out, cell=args.cell, log=lambda m: print(m, file=sys.stderr), pack=args.pack
        )
    if args.json:
        print_json({k: result[k] for k in ("out_dir", "spec", "rows", "missing") if k in result})
    else:
        print()
        print(format_markdown(result["rows"], result["spec"]), end="")
        print(f"\nwritten: {result['out_dir']}/results.md and results.csv")
        if result.get("missing"):
            print(f"not finished yet ({len(result['missing'])}): {', '.join(result['missing'])}")
    return 0
