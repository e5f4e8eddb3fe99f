"""``ncollapse compare``: train two (or more) methods on the identical long-tailed subset and
print one table side by side."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_run_options, print_json, typed_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train the learnable-linear CE baseline and ETF + DR on the same data; print a table",
        description=(
            "Train several methods on the identical long-tailed subset and print overall, many, "
            "medium and few accuracy side by side. With no arguments: CE (learnable linear head) "
            "against ETF + DR on the embedded long-tailed digits, in about a minute on a CPU."
        ),
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="base recipe (file or name in configs/, e.g. cifar10_lt); default: digits",
    )
    p.add_argument(
        "--methods", default="ce,etf_dr", help="comma-separated method presets (default: ce,etf_dr)"
    )
    p.add_argument(
        "--config-a", default=None, help="first complete recipe (instead of --recipe/--methods)"
    )
    p.add_argument("--config-b", default=None, help="second complete recipe")
    add_run_options(p)
    p.set_defaults(func=run)


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:6.2f}"


def format_table(rows: list[dict[str, Any]], split: str = "count") -> str:
    """The side-by-side table printed by ``compare``."""
    sfx = "" if split == "count" else "_idx"
    from ..metrics import balanced_accuracy

    head = f"{'method':<14} {'head':<14} {'loss':<6} {'overall':>7} {'bal.':>7} {'many':>7} {'medium':>7} {'few':>7} {'time (s)':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        f = r["final"]
        lines.append(
            f"{r['method']:<14} {r['head']:<14} {r['loss']:<6} {_pct(f['acc']):>7} "
            f"{_pct(balanced_accuracy(f)):>7} {_pct(f.get('many' + sfx)):>7} "
            f"{_pct(f.get('medium' + sfx)):>7} {_pct(f.get('few' + sfx)):>7} {r['train_seconds']:>9.1f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..composition import compose
    from ..config import config_diff, config_to_dict
    from ..data import load_data
    from ..engine.distributed import is_main_process
    from ..errors import UserError
    from ..rundir import check_out_dir
    from ..runner import run_training
    from ..sweep.spec import parse_methods

    typed = typed_options(args)
    if bool(args.config_a) != bool(args.config_b):
        raise UserError("--config-a and --config-b go together (or use --recipe with --methods)")
    if args.config_a:
        configs = [
            (n, compose(c, overrides=args.overrides, **typed))
            for n, c in (("A", args.config_a), ("B", args.config_b))
        ]
        configs = [(cfg.name if cfg.name != "run" else n, cfg) for n, cfg in configs]
    else:
        methods = parse_methods(args.methods)
        configs = [
            (m, compose(args.recipe, m, [*args.overrides, f"name={m}"], **typed)) for m in methods
        ]
    first = configs[0][1]
    for name, cfg in configs[1:]:
        diff = config_diff(config_to_dict(first.data), config_to_dict(cfg.data), "data.")
        if diff:
            raise UserError(
                f"compare trains every method on the identical subset, but '{name}' asks for "
                f"other data: {'; '.join(diff)}"
            )
    check_out_dir(first.run.out_dir)
    for _name, cfg in configs:
        if cfg.run.name is not None:
            check_out_dir(cfg.run.out_dir, cfg.run.name)
    bundle = load_data(first.data)
    rows = []
    for name, cfg in configs:
        result = run_training(cfg, bundle=bundle, prefix=f"[{name}] ")
        rows.append(
            {
                "method": name,
                "head": cfg.model.head,
                "loss": cfg.loss.name,
                "run_dir": str(result.run_dir),
                "final": result.summary["final"],
                "train_seconds": result.summary["train_seconds"],
                "collapse": result.summary.get("collapse", {}),
            }
        )
    data = {
        "name": first.data.name,
        "imbalance": first.data.imbalance,
        "subset_seed": first.data.subset_seed,
        "class_counts": list(bundle.class_counts),
        "source": bundle.info.get("source"),
    }
    if not is_main_process():  # under torchrun rank 0 alone prints the table
        return 0
    if args.json:
        print_json({"data": data, "epochs": first.optim.epochs, "methods": rows})
    else:
        print()
        subset = (
            f"long-tailed, imbalance factor r={data['imbalance']:g} (subset seed "
            f"{data['subset_seed']})"
            if data["imbalance"] is not None
            else "as given (no long-tail subset)"
        )
        print(
            f"{data['name']} {subset}, class counts {data['class_counts']}, "
            f"{first.optim.epochs} epochs"
        )
        print(format_table(rows))
        print(
            "accuracy in %, final epoch; overall: image-weighted, bal.: class-balanced (the mean "
            "of the per-class accuracies); many/medium/few by training count (>100 / 20-100 / <20);"
        )
        print(
            "the class-index split and per-class accuracy are in each run's summary.json and --json"
        )
    return 0
