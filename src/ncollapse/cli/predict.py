"""``ncollapse predict``: a trained run's top classes for image files, folders or list files."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..jsonsafe import dumps


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a trained run: top-k class names and scores, CSV or JSON",
        description=(
            "Classify images with the weights of RUN_DIR (model.pt; an unfinished run's last "
            "checkpoint, with a warning), preprocessed as the run's evaluation was. PATH: image "
            "files, folders (every image below them, in name order) or list files (one path per "
            "line, relative to the list's folder; a trailing label is ignored). The score is the "
            "logit the run argmaxes (for the ETF head the cosine to the class vertex times the "
            "logit scale), not a probability."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, folders or list files")
    p.add_argument("-k", "--top-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument(
        "--format",
        choices=("csv", "json"),
        default=None,
        help="csv (default; path, class_1, score_1, ...) or json (a list of records); "
        "default from --out's suffix",
    )
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.state import resolve_device
    from ..errors import UserError
    from ..inference import predict_files

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    fmt = args.format or ("json" if args.out and Path(args.out).suffix == ".json" else "csv")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file name such as predictions.csv")
    records = predict_files(
        args.run_dir, args.paths, k=args.top_k, device=str(resolve_device(args.device))
    )
    text = _json(records) if fmt == "json" else _csv(records)
    if args.out:
        from ..rundir import atomic_write_bytes

        atomic_write_bytes(Path(args.out), text.encode())
    else:
        sys.stdout.write(text)
    return 0


def _json(records: list[dict]) -> str:
    return dumps(records, indent=1) + "\n"


def _csv(records: list[dict]) -> str:
    k = max((len(r["top"]) for r in records), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", *[f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "score")]])
    for r in records:
        w.writerow([r["path"], *[v for t in r["top"] for v in (t["class"], f"{t['score']:.6g}")]])
    return buf.getvalue()
