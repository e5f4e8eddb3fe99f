"""Options shared by the training commands, and turning them into a validated config."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import Config, digits_defaults, find_config, load_config, scale_schedule


def add_schedule_options(p: argparse.ArgumentParser, scope: str = "") -> None:
    """--set KEY=VALUE (repeatable) and --epochs N, shared by every training command."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any config field{scope}, e.g. --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="shorten or lengthen the schedule; warm-up, decay milestones and the DRW epoch scale with it",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--set, --epochs, --seed, --device, --out, --name, --json."""
    add_schedule_options(p)
    p.add_argument(
        "--seed", type=int, default=None, help="training seed (initialisation, data order)"
    )
    p.add_argument(
        "--imbalance",
        type=float,
        default=None,
        help="imbalance factor r in (0, 1] (0.01 = imbalance ratio 100)",
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


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if getattr(args, "seed", None) is not None:
        out.append(f"seed={args.seed}")
    if getattr(args, "imbalance", None) is not None:
        out.append(f"data.imbalance={args.imbalance}")
    if getattr(args, "download", False):
        out.append("data.download=true")
    if getattr(args, "device", None) is not None:
        out.append(f"run.device={args.device}")
    if getattr(args, "out", None) is not None:
        out.append(f"run.out_dir={args.out}")
    return out


def make_config(
    args: argparse.Namespace,
    config: str | None,
    method: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    """Defaults (digits when no config file), the recipe file, the method preset, then the
    command-line overrides; ``--epochs`` rescales the schedule last."""
    from ..build import METHODS  # noqa: F401  (validates early that build imports)

    path = find_config(config) if config else None
    base = None if path else digits_defaults()
    merged_extra: dict[str, Any] = {}
    for part in (method or {}, extra or {}):
        for k, v in part.items():
            merged_extra[k] = {**merged_extra.get(k, {}), **v} if isinstance(v, dict) else v
    cfg = load_config(
        path, overrides=[*args.overrides, *shortcut_overrides(args)], base=base, extra=merged_extra
    )
    if args.epochs is not None:
        cfg = scale_schedule(cfg, args.epochs)
    return cfg


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))
