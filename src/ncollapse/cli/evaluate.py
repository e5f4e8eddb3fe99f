"""``ncollapse evaluate``: a finished run's weights on the validation, test or training split."""

from __future__ import annotations

import argparse

from .common import print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a finished run's weights on the validation, test or training split",
        description=(
            "Measure a finished run's final weights (model.pt) on a split, without changing the "
            "run directory: 'val' (images the long-tail subset left unused; drawn for runs "
            "trained without one), 'test' or 'train', optionally with flip TTA."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument(
        "--split",
        action="append",
        choices=("val", "test", "train"),
        default=None,
        help="split to measure (repeatable; default: val)",
    )
    p.add_argument(
        "--tta", action="store_true", help="average each image's and its mirror's logits"
    )
    p.add_argument(
        "--val-per-class",
        type=int,
        default=None,
        help="validation images per class when the run had no validation split (default 1000)",
    )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the policy)")
    p.add_argument("--json", action="store_true", help="print the records as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_run

    records = evaluate_run(
        args.run_dir,
        args.split or ["val"],
        tta=args.tta,
        val_per_class=args.val_per_class,
        device=args.device,
        threads=args.threads,
    )
    if args.json:
        print_json(records)
        return 0
    for split, r in records.items():
        pct = _pct(r)
        print(
            f"{args.run_dir}: {split} accuracy {pct('bal_acc')} class-balanced, {pct('acc')} "
            "image-weighted"
            + (" (flip TTA)" if r["tta"] else "")
            + f"; by count many {pct('many')}, medium {pct('medium')}, few {pct('few')}"
            + (
                f"; by class index (classes sorted by count) head/mid/tail {pct('many_idx')}/"
                f"{pct('medium_idx')}/{pct('few_idx')}"
                if "many_idx" in r
                else ""
            )
        )
    return 0


def _pct(record: dict) -> object:
    def pct(key: str) -> str:
        return "n/a" if record.get(key) is None else f"{100 * record[key]:.2f}%"

    return pct
