"""Many classes: trials of ETF + DR and CE on a real 100-class long-tailed image folder.

Each trial is a named set of ``--set`` overrides on one base recipe; the script trains the
trials you name for the seeds you name (one run directory each under ``--out``; a finished run
is read back, an interrupted one resumed) and prints one table: validation accuracy as the mean
of per-class accuracies (what trials are chosen on), test accuracy, many / medium / few by
training count, and the training set's NC1 and NC3 at the end. ``--json`` writes the rows.

    python benchmarks/many_classes.py --root DIR --list
    python benchmarks/many_classes.py --root DIR --trials dr_global,dr_none,ce --seeds 0
    python benchmarks/many_classes.py --root DIR --collect        # every finished run under --out
    python benchmarks/many_classes.py --collect --probe --record benchmarks/records/X.json

``--probe`` adds, for each run, the size of its loss's gradient at initialisation and at the end
of training (on 1,024 training images, no augmentation): per sample at the backbone's feature,
and the relative step ``lr * ||g|| / ||w||`` of the convolutions, which is what moves a
BatchNorm-normalised layer. ``--record FILE`` writes the rows with the command, the machine and
the versions that made them (a record for the docs).

``DIR`` is an image folder with ``train/<class>/`` and ``test/<class>/`` (for instance 100
Tiny-ImageNet classes at 32 px); ``--imbalance`` sets the long-tail factor (default 0.01).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: what every trial shares: the recipe of the 100-class dev set (the fast recipe's network and
#: schedule at 30 epochs on an image folder, a validation split of up to 50 unused images per
#: class, accuracy measured once at the end), given explicitly in its own epochs, so that an
#: override counted in epochs (``loss.drw_epoch=24``) means that epoch of the 30
BASE = "tinyimagenet100_lt"
COMMON: list[str] = []
#: None: the base recipe's own length; a trial's ``epochs=N`` scales its schedule to N epochs
EPOCHS = None

#: trial name -> (method preset, overrides); every trial runs on the shared recipe, for EPOCHS
#: epochs unless an override ``epochs=N`` says otherwise (the schedule scales with it)
TRIALS: dict[str, tuple[str, list[str]]] = {
    "ce": ("ce", []),
    "dr_global": ("etf_dr", ["loss.balance=global"]),
    "dr_batch": ("etf_dr", ["loss.balance=batch"]),
    "dr_none": ("etf_dr", ["loss.balance=none"]),
    "etf_ce": ("etf_ce", []),
    # the DR loss 10x larger: the same SGD steps as lr x10 with weight decay /10
    "dr_none_x10": ("etf_dr", ["loss.balance=none", "optim.lr=1.0", "optim.weight_decay=5e-5"]),
    "dr_none_nomix": ("etf_dr", ["loss.balance=none", "optim.mixup_alpha=0"]),
    "dr_none_e60": ("etf_dr", ["loss.balance=none", "epochs=60"]),
    "dr_none_w4": ("etf_dr", ["loss.balance=none", "model.width=4"]),
    "dr_global_x10": ("etf_dr", ["loss.balance=global", "optim.lr=1.0", "optim.weight_decay=5e-5"]),
    # the two halves of x10: only the weight decay / 10, only the rate x 10
    "dr_none_wd": ("etf_dr", ["loss.balance=none", "optim.weight_decay=5e-5"]),
    "dr_none_lr": ("etf_dr", ["loss.balance=none", "optim.lr=1.0"]),
    # BatchNorm without the L2 normalisation (the released ImageNet head)
    "dr_none_bn": ("etf_dr", ["loss.balance=none", "model.feature_norm=bn"]),
    # the DR loss at the ETF head's scale s (DR(s h) = s DR(h)), with tempered or deferred weights
    "dr_s10_global_p05": (
        "etf_dr",
        ["model.scale=10", "loss.balance=global", "loss.balance_power=0.5"],
    ),
    "dr_s10_global_drw8": ("etf_dr", ["model.scale=10", "loss.balance=global", "loss.drw_epoch=8"]),
    "dr_s10_global_drw10": (
        "etf_dr",
        ["model.scale=10", "loss.balance=global", "loss.drw_epoch=10"],
    ),
    "dr_s10_global_drw24": (
        "etf_dr",
        ["model.scale=10", "loss.balance=global", "loss.drw_epoch=24"],
    ),
    "dr_s10_global_drw15": (
        "etf_dr",
        ["model.scale=10", "loss.balance=global", "loss.drw_epoch=15"],
    ),
    # cross-entropy's own search (a learnable linear classifier throughout)
    "ce_lr005": ("ce", ["optim.lr=0.05"]),
    "ce_lr02": ("ce", ["optim.lr=0.2"]),
    "ce_wd1e-4": ("ce", ["optim.weight_decay=1e-4"]),
    "ce_wd1e-3": ("ce", ["optim.weight_decay=1e-3"]),
    "ce_nomix": ("ce", ["optim.mixup_alpha=0"]),
    "ce_mix02": ("ce", ["optim.mixup_alpha=0.2"]),
    "ce_kaiming": ("ce", ["model.head_init=kaiming_normal"]),
    # deferred re-weighting (Cao et al.) and deferred class-balanced re-sampling
    "ce_drw8": ("ce", ["loss.drw_epoch=8"]),
    "ce_drw15": ("ce", ["loss.drw_epoch=15"]),
    "ce_drw24": ("ce", ["loss.drw_epoch=24"]),
    "ce_drw27": ("ce", ["loss.drw_epoch=27"]),
    "ce_lr02_drw24": ("ce", ["optim.lr=0.2", "loss.drw_epoch=24"]),
    "ce_mix02_drw24": ("ce", ["optim.mixup_alpha=0.2", "loss.drw_epoch=24"]),
    "ce_drs24": ("ce", ["optim.balanced_from=24"]),
}


def _metrics(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    val = summary.get("val") or {}
    per = [a for a in val.get("per_class") or [] if a is not None]
    final = summary.get("final") or {}
    train = (summary.get("collapse") or {}).get("train") or {}
    return {
        "val_bal": statistics.mean(per) if per else None,
        "test": final.get("acc"),
        "many": final.get("many"),
        "medium": final.get("medium"),
        "few": final.get("few"),
        "nc1": train.get("nc1"),
        "nc3": train.get("nc3"),
        "wall": summary.get("wall_seconds"),
    }


def _train(name: str, seed: int, args: argparse.Namespace) -> Path:
    method, extra = TRIALS[name]
    run = Path(args.out) / f"{name}-r{args.imbalance:g}-s{seed}"
    if (run / "summary.json").is_file():
        return run
    keys = [f"run.threads={args.threads}", "run.progress=log"]
    if (run / "checkpoint.pt").is_file():
        cmd = ["train", "--resume", str(run)]
    else:
        epochs = [e.split("=", 1)[1] for e in extra if e.startswith("epochs=")] or [args.epochs]
        length = [] if epochs[0] is None else ["--epochs", str(epochs[0])]
        extra = [e for e in extra if not e.startswith("epochs=")]
        sets = [*COMMON, f"data.root={args.root}", f"data.imbalance={args.imbalance}", *extra]
        cmd = ["train", "--config", BASE, "--method", method, "--shared-recipe"]
        cmd += [*length, "--seed", str(seed), "--out", args.out]
        cmd += ["--name", run.name] + [x for s in sets for x in ("--set", s)]
    cmd += [x for s in keys for x in ("--set", s)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run([sys.executable, "-m", "ncollapse", *cmd], check=True, env=env)
    return run


def probe(run_dir: Path, trained: bool, n: int = 1024, batch: int = 128) -> dict:
    """Gradient sizes of a run's loss on ``n`` training images (no augmentation, train mode):
    ``grad_f`` the mean per-sample norm at the backbone feature, ``step`` the mean relative
    step ``lr ||g|| / ||w||`` of the convolutions after the first (the BN-normalised ones); at
    the run's initialisation (``trained=False``) or with its final weights."""
    import torch

    from ncollapse.composition import compose
    from ncollapse.criterion import Batch
    from ncollapse.data import load_data
    from ncollapse.engine.state import resolve_device
    from ncollapse.rundir import Run
    from ncollapse.runner import build_trainer

    saved = Run.load(run_dir).config_dict()
    over = {"run": {"progress": "none", "tensorboard": False}}
    cfg = compose(base=saved, overrides=over, threads=1)
    torch.set_num_threads(1)
    bundle = load_data(cfg.data)
    torch.manual_seed(int(cfg.seed))  # a fresh initialisation from the run's seed
    trainer = build_trainer(cfg, bundle, resolve_device("cpu"))
    net = trainer.network
    if trained:
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.train()
    # the loss as it is at that point of training (deferred class weights off at the start)
    trainer.criterion.set_epoch(cfg.optim.epochs - 1 if trained else 0)
    images, labels = bundle.train.images, bundle.train.labels
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n]
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)][1:]
    grad_f, step = [], []
    for start in range(0, len(idx), batch):
        i = idx[start : start + batch]
        x = trainer.augment.normalize(torch.as_tensor(images[i]))
        y = torch.as_tensor(labels[i]).long()
        net.zero_grad()
        f = net.backbone(x)
        f.retain_grad()
        trainer.criterion(Batch(y), net.head(f)).backward()
        grad_f.append(float((f.grad.norm(dim=1) * len(y)).mean()))
        rel = [cfg.optim.lr * float(c.weight.grad.norm() / c.weight.detach().norm()) for c in convs]
        step.append(sum(rel) / len(rel))
    return {"grad_f": statistics.mean(grad_f), "step": statistics.mean(step)}


def _fmt(x: float | None, scale: float = 100.0) -> str:
    return "-" if x is None else f"{x * scale:.2f}"


def _write_record(path: Path, rows: list[dict], args: argparse.Namespace, argv) -> None:
    record = {"imbalance": args.imbalance, "base": BASE, "common": COMMON}
    record.update(_provenance(args, argv))
    record["rows"] = rows
    path.write_text(json.dumps(record, indent=1) + "\n")


def _provenance(args: argparse.Namespace, argv) -> dict:
    import platform

    import torch

    from ncollapse.provenance import cpu_info

    return {
        "command": " ".join(["python", "benchmarks/many_classes.py", *(argv or sys.argv[1:])]),
        "machine": cpu_info().get("model"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _export(run: Path, row: dict, dest: Path, args: argparse.Namespace, argv) -> Path:
    """One run's record, as the CIFAR-10 records: its summary.json with the trial, the class-mean
    validation accuracy, the resolved config and the provenance, named
    ``tinyimagenet100_dev_r<ratio>_<method>_seed<N>.json``."""
    import yaml

    record = json.loads((run / "summary.json").read_text())
    record.update({k: row[k] for k in ("trial", "method", "overrides", "val_bal")})
    record["imbalance"] = args.imbalance
    record["config"] = yaml.safe_load((run / "config.yaml").read_text())
    record.update(_provenance(args, argv))
    record["train_command"] = (
        f"python benchmarks/many_classes.py --root DIR --trials {row['trial']} "
        f"--seeds {row['seed']} --imbalance {args.imbalance:g}"
    )
    dest.mkdir(parents=True, exist_ok=True)
    ratio = round(1 / args.imbalance)
    path = dest / f"tinyimagenet100_dev_r{ratio}_{row['method']}_seed{row['seed']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=os.environ.get("NCOLLAPSE_MANY_CLASSES"))
    p.add_argument("--out", default="runs/many_classes")
    p.add_argument("--trials", default=None, help="comma-separated trial names (default: all)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--imbalance", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--list", action="store_true", help="print the trials and exit")
    p.add_argument("--collect", action="store_true", help="tabulate finished runs only")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", action="store_true", help="add the gradient sizes of each run")
    p.add_argument("--record", default=None, help="write the rows, with provenance, to FILE")
    p.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="write each run's own record (its summary, trial, config, provenance) into DIR",
    )
    args = p.parse_args(argv)
    if args.list:
        for name, (method, extra) in TRIALS.items():
            print(f"{name:24s} --method {method} {' '.join('--set ' + e for e in extra)}")
        return 0
    names = args.trials.split(",") if args.trials else list(TRIALS)
    unknown = [n for n in names if n not in TRIALS]
    if unknown:
        raise SystemExit(f"many_classes: unknown trial(s) {', '.join(unknown)}; see --list")
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.collect and not args.root:
        raise SystemExit("many_classes: give --root (an image folder) or $NCOLLAPSE_MANY_CLASSES")
    rows = []
    for name in names:
        for seed in seeds:
            run = Path(args.out) / f"{name}-r{args.imbalance:g}-s{seed}"
            if not args.collect:
                run = _train(name, seed, args)
            if (run / "summary.json").is_file():
                method, extra = TRIALS[name]
                row = {"trial": name, "seed": seed, "method": method, "overrides": extra}
                row.update(_metrics(run))
                if args.probe:
                    for when, trained in (("init", False), ("final", True)):
                        for k, v in probe(run, trained).items():
                            row[f"{k}_{when}"] = v
                rows.append(row)
                if args.export:
                    print(f"wrote {_export(run, row, Path(args.export), args, argv)}")
    if args.record:
        _write_record(Path(args.record), rows, args, argv)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        "| trial | seed | val (class mean) | test | many | medium | few | train NC1 | train NC3 | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [_fmt(r[k]) for k in ("val_bal", "test", "many", "medium", "few")]
        cells += [_fmt(r["nc1"], 1), _fmt(r["nc3"], 1), _fmt(r["wall"], 1)]
        print(f"| {r['trial']} | {r['seed']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
