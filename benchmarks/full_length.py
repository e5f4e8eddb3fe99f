"""The full-length CIFAR-10-LT grid: each method on its own recipe at 200 epochs, 3 seeds.

Trains, one after another, the queue below (CE and logit adjustment first, then LDAM-DRW, then
the ETF + DR seeds), each as an ordinary run directory under ``--out``: a finished run is
skipped, an interrupted one resumed from its checkpoint, so the same command continues the grid
after any stop. Test accuracy is measured every epoch (the summary keeps the final epoch and,
labelled as selected on the test set, the best one); validation accuracy (images the long-tail
subset leaves unused) is measured once, on the final weights, with ``ncollapse evaluate``.

Each finished run leaves its record, the run's ``summary.json`` with the validation figures,
the precision, the thread count, the CPU (or GPU) model and the command added, as
``benchmarks/records/cifar10_lt_r100_<method>_200ep_seed<N>.json``.

    python benchmarks/full_length.py --list                 # the queue and where each run stands
    nohup python benchmarks/full_length.py --threads 1 &    # train what is missing, in order
    python benchmarks/full_length.py --only ce,la --seeds 0  # a part of the grid
    python benchmarks/full_length.py --pack 12 --device cuda  # the whole grid as one pack

With ``--pack N`` the runs still to train go N at a time into one process, as one batched model
(``ncollapse sweep --pack``: ResNet-32 is every method's backbone, so the whole grid packs); each
run directory and record is the one its own ``ncollapse train`` would give (to float rounding),
the record naming the runs it was packed with.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records"

#: (method, recipe, extra overrides) in training order; each is trained for every seed
METHODS: list[tuple[str, str, list[str]]] = [
    # the released code's CE baseline: its classifier initialised Kaiming-normal (and learnable)
    ("ce", "cifar10_lt_r100_ce", ["model.head_init=kaiming_normal"]),
    ("la", "cifar10_lt_la", []),
    ("ldam_drw", "cifar10_lt_ldam_drw", []),
    ("etf_dr", "cifar10_lt_r100_etf_dr", []),
]
SEEDS = (0, 1, 2)


def queue(methods: list[str] | None, seeds: list[int]) -> list[tuple[str, str, list[str], int]]:
    """(method, recipe, overrides, seed): CE and LA interleaved by seed, then the others."""
    chosen = [m for m in METHODS if methods is None or m[0] in methods]
    first = [m for m in chosen if m[0] in ("ce", "la")]
    rest = [m for m in chosen if m[0] not in ("ce", "la")]
    out = [(m, r, o, s) for s in seeds for m, r, o in first]
    out += [(m, r, o, s) for m, r, o in rest for s in seeds]
    # a run whose record already exists from an earlier grid (the fp32 ETF + DR seed 0) last
    return sorted(out, key=lambda q: (RECORDS / f"{run_name(q[0], q[3])}.json").is_file())


def run_name(method: str, seed: int) -> str:
    return f"cifar10_lt_r100_{method}_200ep_seed{seed}"


def _ncollapse(*args: str) -> list[str]:
    return [sys.executable, "-m", "ncollapse", *args]


def _machine(env: dict) -> str:
    return env.get("cuda_device") or (env.get("cpu") or {}).get("model") or "unrecorded"


def write_record(run_dir: Path, command: list[str], records: Path) -> Path:
    """The run's summary with validation accuracy, precision, threads and machine added."""
    from ncollapse.rundir import Run

    run = Run(run_dir)
    summary = run.summary()
    if summary is None:
        raise SystemExit(f"full_length: {run_dir} has not finished")
    env = run.env()
    if "val" not in summary:
        out = subprocess.run(
            _ncollapse("evaluate", str(run_dir), "--split", "val", "--json"),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        val = json.loads(out.stdout)
        summary["val"] = val.get("val", val)
    summary["precision"] = summary.get("precision") or env.get("precision")
    summary["threads"] = env.get("threads")
    summary["machine"] = _machine(env)
    summary["torch"] = env.get("torch")
    summary["command"] = shlex.join(["ncollapse", *command])
    if env.get("pack"):  # trained as one batched model with these runs
        summary["packed_with"] = env["pack"]
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{run_dir.name}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/full_length", help="parent of the run directories")
    p.add_argument("--records", default=str(RECORDS), help="where finished records are written")
    p.add_argument("--only", default=None, help="methods, comma-separated (default: all)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads per run (fixed: resume is exact)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--list", action="store_true", help="print the queue and each run's state")
    p.add_argument(
        "--pack", type=int, default=1, metavar="N",
        help="train the runs still to train N at a time in this process, as one batched model",
    )  # fmt: skip
    args = p.parse_args(argv)
    from ncollapse.rundir import Run

    methods = args.only.split(",") if args.only else None
    seeds = [int(s) for s in args.seeds.split(",")]
    out, records = Path(args.out), Path(args.records)
    if args.pack > 1 and not args.list:
        return train_packed(queue(methods, seeds), args, out, records)
    for method, recipe, extra, seed in queue(methods, seeds):
        name = run_name(method, seed)
        run = Run(out / name)
        status = run.status()
        if args.list:
            done = (records / f"{name}.json").is_file()
            print(f"{name:42s} {status:10s} {'record written' if done else ''}")
            continue
        new = _train_command(recipe, extra, seed, out, name)
        run_keys = [f"run.threads={args.threads}", "run.progress=log", f"run.device={args.device}"]
        if status == "started":
            raise SystemExit(
                f"full_length: {run.path} holds no checkpoint; remove it to start over"
            )
        if status == "new":
            cmd = new + [x for o in run_keys for x in ("--set", o)]
        elif status == "resumable":
            cmd = ["train", "--resume", str(run.path)] + [x for o in run_keys for x in ("--set", o)]
        else:
            cmd = None
        if cmd is not None:
            print(f"full_length: {shlex.join(['ncollapse', *cmd])}", flush=True)
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            rc = subprocess.call(_ncollapse(*cmd), env=env)
            if rc != 0:
                print(f"full_length: {name} stopped with status {rc}", file=sys.stderr)
                return rc
        record = write_record(run.path, new, records)
        print(f"full_length: {name} done, record {record}", flush=True)
    return 0


def _train_command(recipe: str, extra: list[str], seed: int, out: Path, name: str) -> list[str]:
    new = ["train", "--config", recipe, "--seed", str(seed), "--out", str(out), "--name", name]
    return new + [x for o in extra for x in ("--set", o)]


def train_packed(todo: list, args: argparse.Namespace, out: Path, records: Path) -> int:
    """The queue's unfinished runs, ``args.pack`` at a time as one batched model (in this
    process, resumed ones from their checkpoints); a record for each that finishes."""
    from ncollapse.composition import compose
    from ncollapse.rundir import Run
    from ncollapse.runner import run_packed
    from ncollapse.threads import set_threads

    set_threads(args.threads)
    run_keys = [f"run.threads={args.threads}", "run.progress=log", f"run.device={args.device}"]
    waiting = []
    for method, recipe, extra, seed in todo:
        name = run_name(method, seed)
        run = Run(out / name)
        status = run.status()
        if status == "started":
            raise SystemExit(
                f"full_length: {run.path} holds no checkpoint; remove it to start over"
            )
        if status == "done":
            if not (records / f"{name}.json").is_file():
                write_record(run.path, _train_command(recipe, extra, seed, out, name), records)
            continue
        waiting.append(
            (method, recipe, extra, seed, name, run.path if status == "resumable" else None)
        )
    for i in range(0, len(waiting), args.pack):
        chunk = waiting[i : i + args.pack]
        cfgs = [
            compose(recipe, None, [*extra, *run_keys], seed=seed, out=str(out), name=name)
            for _, recipe, extra, seed, name, _ in chunk
        ]
        names = [c[4] for c in chunk]
        print(
            f"full_length: training {len(chunk)} runs as one pack: {', '.join(names)}", flush=True
        )
        results = run_packed(
            cfgs,
            resumes=[c[5] for c in chunk],
            prefixes=[f"{name} " for name in names],
            log=lambda msg: print(f"full_length: {msg}", flush=True),
        )
        for (_, recipe, extra, seed, name, _), result in zip(chunk, results):
            if isinstance(result, BaseException):
                print(f"full_length: {name} stopped: {result}", file=sys.stderr)
                return 1
            command = _train_command(recipe, extra, seed, out, name)
            print(
                f"full_length: {name} done, record {write_record(result.run_dir, command, records)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
