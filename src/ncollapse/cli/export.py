"""``ncollapse export``: a trained run as one file that PyTorch loads without ncollapse."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's model as a torch.export file that loads without ncollapse",
        description=(
            "Write the run's network, with its normalisation, flip TTA and post-hoc logit "
            "adjustment where the run used them, as a torch.export program (.pt2): input uint8 "
            "images (N, C, H, W) at the run's input size, output the logits (N, K). Load it "
            "with torch.export.load(FILE).module(); the class names are stored in it "
            "(docs/api.md, 'Use a trained model')."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--out", metavar="FILE", help="where to write (default: RUN_DIR/model.pt2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import export_run

    path = export_run(args.run_dir, args.out)
    print(f"wrote {path} (torch.export; load with torch.export.load('{path}').module())")
    return 0
