"""The full-length CIFAR-10-LT grid: each method on its own recipe at 200 epochs, 3 seeds.

Trains, one after another, the queue below (CE and logit adjustment first, then the ETF + DR
seeds, which the paper's central comparison waits on, then LDAM-DRW), each as an ordinary run
directory under ``--out``: a finished run is skipped, an interrupted one resumed from its
checkpoint (before any run is started anew), so the same command continues the grid after any
stop. Test accuracy is measured every epoch (the summary keeps the final epoch and,
labelled as selected on the test set, the best one); validation accuracy (images the long-tail
subset leaves unused) is measured once, on the final weights, with ``ncollapse evaluate``.

Each finished run leaves its record, the run's ``summary.json`` with the validation figures,
the precision, the thread count, the CPU (or GPU) model and the command added, as
``benchmarks/records/cifar10_lt_r100_<method>_200ep_seed<N>.json``. Its ``starts`` lists each
start of the run (the epoch it picked up after, threads, machine, precision), since a run stopped
and resumed elsewhere trains its parts on different hardware; ``threads``, ``machine`` and
``precision`` name every one used, in order, when they differ.

    python benchmarks/full_length.py --list                 # the queue and where each run stands
    nohup python benchmarks/full_length.py --threads 1 &    # train what is missing, in order
    nohup python benchmarks/full_length.py --jobs 2 &       # two runs at a time, a core each
    python benchmarks/full_length.py --only ce,la --seeds 0  # a part of the grid
    python benchmarks/full_length.py --pack 12 --device cuda  # the whole grid as one pack
    python benchmarks/full_length.py --save-partial          # pack unfinished runs (see below)
    nohup python benchmarks/full_length.py --redo etf_dr:0 &  # train a run on record again

A run whose record is under ``benchmarks/records/`` is never trained again (wherever it ran),
unless ``--redo`` names it: then it is trained after the rest, and its record replaced when it
finishes.

Each run is claimed while it trains (a lock file, ``<out>/.<run>.lock``, held by the process that
trains it), so ``--jobs N`` (N runs at a time, each in its own process with ``--threads``
threads, each logging to ``<out>/<run>.log``) and invocations started side by side never train
the same run twice; ``--list`` says which runs are being trained now. SIGTERM or SIGINT to this
script is passed on to the runs it trains: each saves a checkpoint at its next step and stops,
to resume where it was.

The runs take hours each on a CPU and outlive a working session. ``--save-partial`` packs every
unfinished run (its checkpoint, config, data and metrics files; not TensorBoard's) into
``benchmarks/records/partial/<run>.tar.gz``, so that it can be kept with the project; a later
invocation on a machine without the run directory unpacks it and resumes from its checkpoint.
A finished run's pack is removed when its record is written.

With ``--pack N`` the runs still to train go N at a time into one process, as one batched model
(``ncollapse sweep --pack``: ResNet-32 is every method's backbone, so the whole grid packs); each
run directory and record is the one its own ``ncollapse train`` would give (to float rounding),
the record naming the runs it was packed with. (``--save-partial``'s tarballs are another kind
of pack: files, not runs.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records"
PARTIAL = "partial"  # under the records folder: packed unfinished runs
#: the files of a run directory that a resume needs (TensorBoard's events are left out)
PACKED = ("checkpoint.pt", "config.yaml", "data.json", "env.json", "metrics.jsonl")

#: (method, recipe, extra overrides) in training order; each is trained for every seed
METHODS: list[tuple[str, str, list[str]]] = [
    # the released code's CE baseline: its classifier initialised Kaiming-normal (and learnable)
    ("ce", "cifar10_lt_r100_ce", ["model.head_init=kaiming_normal"]),
    ("la", "cifar10_lt_la", []),
    ("etf_dr", "cifar10_lt_r100_etf_dr", []),
    ("ldam_drw", "cifar10_lt_ldam_drw", []),
]
SEEDS = (0, 1, 2)


def queue(
    methods: list[str] | None,
    seeds: list[int],
    out: Path | None = None,
    records: Path = RECORDS,
    redo: set[str] | frozenset[str] | None = frozenset(),
) -> list[tuple[str, str, list[str], int]]:
    """(method, recipe, overrides, seed): CE and LA interleaved by seed, then the others, each
    method's seeds in turn. A run already started (a checkpoint under ``out``, or a packed
    unfinished run) comes before any new one, so that a restarted grid finishes what it holds
    before it starts more. A run whose record already exists is left out, wherever it was
    trained, unless ``redo`` names it (``run_name``'s name: it is trained again, last, and its
    record replaced when it lands); ``redo=None`` keeps every run (the whole grid, for
    ``--list``)."""
    chosen = [m for m in METHODS if methods is None or m[0] in methods]
    first = [m for m in chosen if m[0] in ("ce", "la")]
    rest = [m for m in chosen if m[0] not in ("ce", "la")]
    todo = [(m, r, o, s) for s in seeds for m, r, o in first]
    todo += [(m, r, o, s) for m, r, o in rest for s in seeds]

    def on_record(q: tuple[str, str, list[str], int]) -> bool:
        return (records / f"{run_name(q[0], q[3])}.json").is_file()

    if redo is not None:
        todo = [q for q in todo if not on_record(q) or run_name(q[0], q[3]) in redo]

    def started(name: str) -> bool:
        from ncollapse.rundir import Run

        held = out is not None and Run(out / name).status() == "resumable"
        return held or (records / PARTIAL / f"{name}.tar.gz").is_file()

    def rank(q: tuple[str, str, list[str], int]) -> tuple[bool, bool]:
        return on_record(q), not started(run_name(q[0], q[3]))

    return sorted(todo, key=rank)


def run_name(method: str, seed: int) -> str:
    return f"cifar10_lt_r100_{method}_200ep_seed{seed}"


def _ncollapse(*args: str) -> list[str]:
    return [sys.executable, "-m", "ncollapse", *args]


def _machine(env: dict) -> str:
    return env.get("cuda_device") or (env.get("cpu") or {}).get("model") or "unrecorded"


def _starts(env: dict) -> list[dict]:
    """Each start of the run (the first, then every resume ``env.json`` lists): the epoch it
    picked up after, its threads, machine and precision."""
    first = {"after_epoch": 0, "threads": env.get("threads"), "machine": _machine(env)}
    out = [{**first, "precision": env.get("precision")}]
    for r in env.get("resumes", []):
        start = {"after_epoch": r.get("after_epoch"), "threads": r.get("threads")}
        if "step" in r:  # stopped inside the next epoch
            start.update(step=r["step"], steps=r.get("steps"))
        machine = r.get("cuda_device") or r.get("cpu") or "unrecorded"
        out.append({**start, "machine": machine, "precision": r.get("precision")})
    return out


def _one_or_all(values: list):
    """The value when every start had the same, else each distinct one in order."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else distinct


def _in_order(names: list[str]) -> str:
    """Each distinct name once, in order: ``"bf16"``, or ``"AMD EPYC, then NVIDIA H100"``."""
    return ", then ".join(dict.fromkeys(names))


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
    starts = _starts(env)
    first = summary.get("precision") or env.get("precision")
    precisions = [first, *(s["precision"] for s in starts[1:])]
    summary["precision"] = _in_order([p for p in precisions if p]) or None
    summary["threads"] = _one_or_all([s["threads"] for s in starts])
    summary["machine"] = _in_order([s["machine"] for s in starts])
    summary["starts"] = starts
    summary["torch"] = env.get("torch")
    summary["command"] = shlex.join(["ncollapse", *command])
    if env.get("pack"):  # trained as one batched model with these runs
        summary["packed_with"] = env["pack"]
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{run_dir.name}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def save_partial(run_dir: Path, records: Path) -> Path | None:
    """Pack an unfinished run's resumable files; None when there is nothing to pack."""
    if not (run_dir / "checkpoint.pt").is_file() or (run_dir / "summary.json").is_file():
        return None
    dest = records / PARTIAL / f"{run_dir.name}.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in PACKED:
            if (run_dir / name).is_file():
                tar.add(run_dir / name, arcname=f"{run_dir.name}/{name}")
    tmp.replace(dest)
    return dest


def restore_partial(run_dir: Path, records: Path) -> bool:
    """Unpack a packed unfinished run where its directory is missing."""
    pack = records / PARTIAL / f"{run_dir.name}.tar.gz"
    if run_dir.exists() or not pack.is_file():
        return False
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        if any(Path(m.name).parts[0] != run_dir.name or ".." in m.name for m in members):
            raise SystemExit(f"full_length: {pack} holds files outside {run_dir.name}/")
        tar.extractall(run_dir.parent, members=members, filter="data")
    return True


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
    p.add_argument(
        "--eval-batch", type=int, default=128, metavar="N",
        help="evaluation batch size, also of runs resumed from before it was the default "
        "(no effect on results; benchmarks/eval_batch.py)",
    )  # fmt: skip
    p.add_argument("--list", action="store_true", help="print the queue and each run's state")
    p.add_argument(
        "--pack", type=int, default=1, metavar="N",
        help="train the runs still to train N at a time in this process, as one batched model",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="train N runs at a time, each in its own process (--threads threads each)",
    )  # fmt: skip
    p.add_argument("--save-partial", action="store_true", help="pack the unfinished runs and exit")
    p.add_argument(
        "--redo", default="", metavar="METHOD:SEED,...",
        help="train these runs again although their records exist (e.g. etf_dr:0); each record "
        "is replaced when its run finishes. Without it a run on record is never trained again",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.jobs < 1 or args.pack < 1:
        p.error("--jobs and --pack take a number of runs, 1 or more")
    if args.jobs > 1 and args.pack > 1:
        p.error("--jobs and --pack are two ways to train runs side by side: give one of them")
    from ncollapse.rundir import Run

    methods = args.only.split(",") if args.only else None
    seeds = [int(s) for s in args.seeds.split(",")]
    out, records = Path(args.out), Path(args.records)
    redo = _redo_names(args.redo, p)
    if args.pack > 1 and not (args.list or args.save_partial):
        return train_packed(queue(methods, seeds, out, records, redo), args, out, records)
    if args.save_partial or args.list:
        todo = queue(methods, seeds, out, records, redo=None)  # every run of the grid
        for method, _, _, seed in todo:
            name = run_name(method, seed)
            if args.save_partial:
                packed = save_partial(out / name, records)
                if packed is not None:
                    print(f"full_length: {name} packed into {packed}")
                continue
            held = (out / f".{name}.lock").is_file()  # else no process has claimed it
            with claim(out, name) if held else contextlib.nullcontext(True) as mine:
                if mine and restore_partial(out / name, records):
                    print(f"full_length: {name} unpacked from {records / PARTIAL}", flush=True)
                status = Run(out / name).status() if mine else "training"
            done = (records / f"{name}.json").is_file()
            print(f"{name:42s} {status:10s} {progress(out / name):16s} "
                  f"{'record written' if done else ''}".rstrip())  # fmt: skip
        return 0
    return Grid(queue(methods, seeds, out, records, redo), args, out, records, redo).run()


def _redo_names(spec: str, p: argparse.ArgumentParser) -> set[str]:
    """``--redo``'s ``method:seed`` pairs as run names; a clear error for a malformed one."""
    names = set()
    for item in filter(None, (x.strip() for x in spec.split(","))):
        method, _, seed = item.partition(":")
        if method not in [m[0] for m in METHODS] or not seed.isdigit():
            p.error(
                f"--redo {item!r}: give METHOD:SEED, METHOD one of "
                f"{', '.join(m[0] for m in METHODS)} (e.g. --redo etf_dr:0)"
            )
        names.add(run_name(method, int(seed)))
    return names


def progress(run_dir: Path) -> str:
    """``epoch N/M``: the last epoch the run finished, of its length; '' before its first."""
    from ncollapse.rundir import Run

    run = Run(run_dir)
    if not run.metrics_path.is_file():
        return ""
    try:
        epochs = run.raw_config()["optim"]["epochs"]
        last = max(r["epoch"] for r in run.metrics() if r.get("kind") == "train")
    except (KeyError, TypeError, ValueError, OSError):  # no epoch finished yet, a bare config
        return ""
    return f"epoch {last}/{epochs}"


@contextlib.contextmanager
def claim(out: Path, name: str) -> Iterator[bool]:
    """Hold run ``name`` for this process (or thread) while the block runs: yields False, and
    holds nothing, when another already holds it (an advisory lock on ``<out>/.<name>.lock``)."""
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): one invocation at a time
        yield True
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{name}.lock", "a") as handle:
        for attempt in range(5):  # a --list looking in holds it for an instant: ask again
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Grid:
    """The queue, trained by ``args.jobs`` workers: each takes the next run nobody holds."""

    def __init__(
        self,
        todo: list,
        args: argparse.Namespace,
        out: Path,
        records: Path,
        redo: set[str] | frozenset[str] = frozenset(),
    ):
        self.todo, self.args, self.out, self.records = todo, args, out, records
        self.redo = redo  # runs on record that --redo asked to train again
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping: int | None = None  # the signal asked to stop on

    def run(self) -> int:
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.args.jobs == 1:
                return self.work(separate_logs=False)
            results: list[int] = []
            workers = [
                threading.Thread(target=lambda: results.append(self.work(separate_logs=True)))
                for _ in range(self.args.jobs)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return max(results, default=0)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop(self, signum: int, frame) -> None:
        """Pass the signal on: each run saves a checkpoint at its next step and stops."""
        self.stopping = signum
        with self.lock:
            for child in self.children:
                child.send_signal(signal.SIGTERM)

    def work(self, separate_logs: bool) -> int:
        for method, recipe, extra, seed in self.todo:
            if self.stopping is not None:
                return 128 + self.stopping
            name = run_name(method, seed)
            with claim(self.out, name) as mine:
                if not mine:
                    continue  # another worker or invocation trains it
                rc = self.one(name, recipe, extra, seed, separate_logs)
            if rc:
                return rc
        return 0 if self.stopping is None else 128 + self.stopping

    def one(self, name: str, recipe: str, extra: list[str], seed: int, separate_logs: bool) -> int:
        """Train (or resume) one claimed run and write its record; the exit status."""
        from ncollapse.rundir import Run

        args, out, records = self.args, self.out, self.records
        run = Run(out / name)
        if restore_partial(run.path, records):
            print(f"full_length: {name} unpacked from {records / PARTIAL}", flush=True)
        status = run.status()
        if status == "done" and (records / f"{name}.json").is_file():
            if name in self.redo:
                print(f"full_length: {run.path} is finished and on record: move it away to "
                      "train it again", file=sys.stderr)  # fmt: skip
            return 0  # finished and on record (by another worker, or an earlier invocation)
        new = _train_command(recipe, extra, seed, out, name)
        run_keys = _run_keys(args)
        if status == "started":
            print(
                f"full_length: {run.path} holds no checkpoint; remove it to start over",
                file=sys.stderr,
            )
            return 1
        if status == "new":
            cmd = new + [x for o in run_keys for x in ("--set", o)]
        elif status == "resumable":
            cmd = ["train", "--resume", str(run.path)] + [x for o in run_keys for x in ("--set", o)]
        else:
            cmd = None
        if cmd is not None:
            log = out / f"{name}.log" if separate_logs else None
            where = f" (log {log})" if log else ""
            print(f"full_length: {shlex.join(['ncollapse', *cmd])}{where}", flush=True)
            rc = self.call(_ncollapse(*cmd), log)
            if rc != 0:
                print(f"full_length: {name} stopped with status {rc}", file=sys.stderr)
                return rc
        record = write_record(run.path, new, records)
        (records / PARTIAL / f"{name}.tar.gz").unlink(missing_ok=True)
        print(f"full_length: {name} done, record {record}", flush=True)
        return 0

    def call(self, cmd: list[str], log: Path | None) -> int:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(open(log, "a")) if log else None
            with self.lock:
                if self.stopping is not None:
                    return 128 + self.stopping
                child = subprocess.Popen(cmd, env=env, stdout=sink, stderr=sink)
                self.children.add(child)
            try:
                return child.wait()
            finally:
                with self.lock:
                    self.children.discard(child)


def _run_keys(args: argparse.Namespace) -> list[str]:
    """How the runs execute (no result depends on these; a resume may change them)."""
    return [
        f"run.threads={args.threads}", "run.progress=log", f"run.device={args.device}",
        f"eval.batch_size={args.eval_batch}",
    ]  # fmt: skip


def _train_command(recipe: str, extra: list[str], seed: int, out: Path, name: str) -> list[str]:
    new = ["train", "--config", recipe, "--seed", str(seed), "--out", str(out), "--name", name]
    return new + [x for o in extra for x in ("--set", o)]


def train_packed(todo: list, args: argparse.Namespace, out: Path, records: Path) -> int:
    """The queue's unfinished runs, ``args.pack`` at a time as one batched model (in this
    process, resumed ones from their checkpoints); a record for each that finishes."""
    from ncollapse.composition import compose
    from ncollapse.errors import Preempted
    from ncollapse.rundir import Run
    from ncollapse.runner import run_packed
    from ncollapse.threads import set_threads

    set_threads(args.threads)
    run_keys = _run_keys(args)
    waiting = []
    for method, recipe, extra, seed in todo:
        name = run_name(method, seed)
        run = Run(out / name)
        if restore_partial(run.path, records):
            print(f"full_length: {name} unpacked from {records / PARTIAL}", flush=True)
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
        try:
            results = run_packed(
                cfgs,
                resumes=[c[5] for c in chunk],
                prefixes=[f"{name} " for name in names],
                log=lambda msg: print(f"full_length: {msg}", flush=True),
            )
        except Preempted as stop:  # SIGTERM/SIGUSR1 (timeout's, a scheduler's): saved, resumable
            print(f"full_length: {stop}; rerun the same command to go on", file=sys.stderr)
            return stop.exit_status
        for (_, recipe, extra, seed, name, _), result in zip(chunk, results):
            if isinstance(result, BaseException):
                print(f"full_length: {name} stopped: {result}", file=sys.stderr)
                return 1
            command = _train_command(recipe, extra, seed, out, name)
            record = write_record(result.run_dir, command, records)
            (records / PARTIAL / f"{name}.tar.gz").unlink(missing_ok=True)
            print(f"full_length: {name} done, record {record}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BrokenPipeError:  # ``--list | head``: the reader stopped reading; nothing is lost
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
