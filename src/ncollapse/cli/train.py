"""``ncollapse train``: train one config (or resume a run)."""

from __future__ import annotations

import argparse

from .common import add_run_options, print_json, typed_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..methods import METHODS

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
        help=f"method preset: {', '.join(METHODS.names())}",
    )
    p.add_argument(
        "--name", default=None, help="run directory name (default: derived from the recipe)"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (only run.* keys and eval.batch_size may change)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (recipe, method, --set, --epochs) as YAML and exit",
    )
    add_run_options(p)
    p.set_defaults(func=run)


#: options that choose what a run computes or where it goes: a resume keeps the run's own
_NOT_WITH_RESUME = ("config", "method", "name", "out", "seed", "imbalance", "epochs", "download")


def run(args: argparse.Namespace) -> int:
    from ..composition import compose
    from ..engine.distributed import is_main_process
    from ..errors import UserError
    from ..rundir import Run
    from ..runner import run_training, train

    if args.resume is not None:
        run = Run.load(args.resume)  # a clear error first when it is not a run directory
        given = [f"--{k}" for k in _NOT_WITH_RESUME if getattr(args, k, None) not in (None, False)]
        if given:
            raise UserError(
                f"--resume continues {args.resume} as it was configured; {', '.join(given)} "
                "would be ignored: drop them (only --set run.KEY=..., --set eval.batch_size=... "
                "and --device may change on a resume), or start a new run without --resume"
            )
        device = {"device": args.device} if args.device else {}
        # reads the run directory once; a damaged file is named before any data is loaded
        result = train(resume=run, overrides=args.overrides, **device)
    else:
        cfg = compose(
            args.config, args.method, args.overrides, name=args.name, **typed_options(args)
        )
        if args.print_config:
            import yaml

            from ..config import config_to_dict

            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
            return 0
        result = run_training(cfg)  # checks --out and --name before any data is loaded
    if not is_main_process():  # under torchrun rank 0 alone reports the run
        return 0
    if args.json:
        print_json({"run_dir": str(result.run_dir), **result.summary})
        return 0
    for split, rec in (
        ("validation", result.summary.get("val")),
        ("test", result.summary["final"]),
    ):
        if rec:
            print(f"{result.run_dir}: final {split} accuracy {_accuracy(rec)}")
    print(
        f"{result.run_dir}: {result.summary['train_seconds']:.1f}s training, "
        f"{result.summary['wall_seconds']:.1f}s in all ({result.summary.get('precision', 'fp32')})"
    )
    return 0


def _accuracy(rec: dict) -> str:
    """Class-balanced and image-weighted accuracy, the groups by training count, and the
    class-index split where the classes are sorted by count."""
    from ..metrics import balanced_accuracy

    text = (
        f"{_pct(balanced_accuracy(rec))} class-balanced, {_pct(rec.get('acc'))} image-weighted "
        f"(by training count: many {_pct(rec.get('many'))}, medium {_pct(rec.get('medium'))}, "
        f"few {_pct(rec.get('few'))}"
    )
    if "many_idx" in rec:
        text += (
            f"; by class index, the classes being sorted by count: head/mid/tail "
            f"{_pct(rec.get('many_idx'))}/{_pct(rec.get('medium_idx'))}/{_pct(rec.get('few_idx'))}"
        )
    return text + ")"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
