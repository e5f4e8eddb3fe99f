"""``ncollapse train``: train one config (or resume a run)."""

from __future__ import annotations

import argparse

from .common import add_run_options, make_config, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one recipe (default: ETF + DR on long-tailed digits)",
        description="Train one recipe into a new run directory, or resume an interrupted run.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="recipe YAML file or name (see configs/); default: embedded digits",
    )
    p.add_argument(
        "--method",
        default=None,
        help="method preset: ce, etf_dr, etf_ce, la, bs, focal, ldam_drw, allnc, ce_frozen",
    )
    p.add_argument(
        "--name", default=None, help="run directory name (default: derived from the recipe)"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..build import method_overrides
    from ..config import load_config, scale_schedule
    from ..engine.rundir import RunDir
    from ..runner import run_training
    from .common import shortcut_overrides

    method = method_overrides(args.method) if args.method else None
    if args.resume is not None:
        # start from the saved config; the runner refuses any change to what is computed
        saved = RunDir(args.resume).read_config_dict()
        cfg = load_config(
            base=saved, extra=method, overrides=[*args.overrides, *shortcut_overrides(args)]
        )
        if args.epochs is not None:
            cfg = scale_schedule(cfg, args.epochs)
    else:
        extra = {"run": {"name": args.name}} if args.name else {}
        if args.method and not args.config:
            extra["name"] = args.method
        cfg = make_config(args, args.config, method=method, extra=extra)
    result = run_training(cfg, resume=args.resume)
    final = result.summary["final"]
    if args.json:
        print_json({"run_dir": str(result.run_dir), **result.summary})
    else:
        print(
            f"{result.run_dir}: final test accuracy {100 * final['acc']:.2f}% "
            f"(many {_pct(final.get('many'))}, medium {_pct(final.get('medium'))}, few {_pct(final.get('few'))}) "
            f"in {result.summary['train_seconds']:.1f}s"
        )
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
