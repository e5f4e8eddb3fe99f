"""Options shared by the training commands, and turning them into a config with
:func:`ncollapse.composition.compose` (the one composition point)."""

from __future__ import annotations

import argparse
from typing import Any

from ..jsonsafe import dumps


def add_schedule_options(p: argparse.ArgumentParser, scope: str = "") -> None:
    """--set KEY=VALUE (repeatable) and --epochs N, shared by every training command."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any config field{scope}, e.g. --set optim.lr=0.05 (repeatable; "
        "docs/config.md lists every key)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="shorten or lengthen the schedule; the decay milestones and the DRW epoch scale with it, "
        "the warm-up keeps its length (at most a sixth of N)",
    )
    p.add_argument(
        "--shared-recipe",
        action="store_true",
        help="a method preset changes only the head and loss, not the training recipe (by "
        "default a baseline brings its own paper's recipe: mixup, schedule, batch, lr)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--set, --epochs, --seed, --imbalance, --download, --device, --out, --json."""
    add_schedule_options(p)
    p.add_argument(
        "--seed", type=int, default=None, help="training seed (initialisation, data order)"
    )
    p.add_argument(
        "--imbalance",
        type=float,
        default=None,
        help="imbalance factor r in (0, 1] (0.01 = imbalance ratio 100) of a long-tailed "
        "training subset (default: the recipe's; your own image folder: every image, as given)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the official dataset archives when missing (checksums verified; needs a network)",
    )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--out", default=None, help="parent directory of run directories (default: runs)"
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


def typed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The typed shortcuts of :func:`add_run_options` that were given, as ``compose`` keywords."""
    out: dict[str, Any] = {}
    for key in ("seed", "imbalance", "device", "out", "epochs"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if getattr(args, "download", False):
        out["download"] = True
    if getattr(args, "shared_recipe", False):
        out["shared_recipe"] = True
    return out


def print_json(obj: Any) -> None:
    print(dumps(obj, indent=2))
