"""Time to accuracy: the fast ETF + DR recipe against the official 200-epoch recipe.

Trains the fast recipe for the given seeds on CIFAR-10-LT (r = 0.01) with the validation split
(images the long-tail subset leaves unused), and prints, per seed and as mean ± std: the run's
wall time (training, evaluation and collapse metrics, as the run records it), validation and
test accuracy, beside the official recipe's figures read from its record
(``benchmarks/records/cifar10_lt_r100_etf_dr_200ep_fp32_seed0.json``, the summary.json of that
run in fp32, the yardstick the docs quote; ``full_length.py`` writes the grid's own seed 0 under
the name without ``_fp32``),
and the time ratio. ``--official`` reruns the official recipe in the same invocation instead of
reading the record (hours on a CPU: for a GPU, or a long night). Each run writes an ordinary run
directory under ``--out``; a finished one is read back rather than retrained. ``--runs`` reads
finished run directories of the fast recipe trained elsewhere instead (for instance the
``etf_dr`` cells of a sweep over the fast recipe with ``data.val=unused``), training nothing.

    python benchmarks/time_to_accuracy.py                        # seeds 0,1,2, one thread each
    python benchmarks/time_to_accuracy.py --seeds 0 --threads 2
    python benchmarks/time_to_accuracy.py --official --device cuda
    python benchmarks/time_to_accuracy.py --runs runs/sweep/etf_dr-ir100-s*
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFICIAL_RECORD = HERE / "records" / "cifar10_lt_r100_etf_dr_200ep_fp32_seed0.json"


def _train(recipe: str, seed: int, args: argparse.Namespace, val: bool) -> str:
    """Train (or resume, or find finished) one seed of ``recipe``; its run directory."""
    import ncollapse
    from ncollapse.rundir import Run

    stem = Path(recipe).name.removesuffix(".yaml").removesuffix(".yml")  # a name or a file
    name = f"{stem}-s{seed}"
    run = Run(Path(args.out) / name)
    if run.status() == "done":
        return str(run.path)
    over = [f"run.progress={args.progress}"]
    if args.threads:
        over.append(f"run.threads={args.threads}")
    if val:
        over += ["data.val=unused", "eval.splits=[val,test]"]
    if run.status() == "resumable":
        return str(ncollapse.train(resume=run.path, device=args.device).run_dir)
    res = ncollapse.train(
        recipe, overrides=over, seed=seed, out=args.out, name=name, device=args.device
    )
    return str(res.run_dir)


def _finished(path: str) -> tuple[dict, str, str]:
    """A finished run's summary, its recipe name (its config's ``name``) and the machine it
    ran on (from its env.json: the GPU, else the CPU model)."""
    from ncollapse.rundir import Run

    run = Run(Path(path))
    if run.status() != "done":
        raise SystemExit(f"time_to_accuracy: {path} is not a finished run (no summary.json)")
    env_file = run.path / "env.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    where = env.get("cuda_device") or (env.get("cpu") or {}).get("model") or "unrecorded"
    return run.summary(), str(run.raw_config().get("name") or run.path.name), str(where)


def _row(label: str, summaries: list[dict]) -> dict:
    def stat(values: list[float | None]) -> tuple[float | None, float | None, list]:
        xs = [v for v in values if v is not None]
        if not xs:
            return None, None, values
        return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), values

    wall = stat([s.get("wall_seconds") for s in summaries])
    test = stat([(s.get("final") or {}).get("acc") for s in summaries])
    tail = stat([(s.get("final") or {}).get("few_idx") for s in summaries])
    val = stat([(s.get("val") or {}).get("acc") for s in summaries])
    return {"label": label, "epochs": summaries[0].get("epochs"), "wall": wall, "test": test,
            "tail": tail, "val": val, "precision": summaries[0].get("precision", "fp32")}  # fmt: skip


def time_ratio(official: list[dict], fast: list[dict]) -> tuple[float | None, str]:
    """The official runs' mean wall time over the fast runs', and what it compares; no ratio
    when the two were measured on different kinds of device (a CPU record against GPU runs
    says nothing about either recipe)."""
    where_official = sorted({str(s.get("device", "?")) for s in official})
    where_fast = sorted({str(s.get("device", "?")) for s in fast})
    if where_official != where_fast:
        return None, (
            f"no time ratio: the official figure was measured on {'/'.join(where_official)}, "
            f"the fast runs on {'/'.join(where_fast)}; rerun with --official on this machine"
        )
    wall_official = [s["wall_seconds"] for s in official if s.get("wall_seconds")]
    wall_fast = [s["wall_seconds"] for s in fast if s.get("wall_seconds")]
    if not wall_official or not wall_fast:
        return None, "no time ratio: a run recorded no wall time"
    ratio = statistics.mean(wall_official) / statistics.mean(wall_fast)
    return ratio, f"time ratio official / fast: {ratio:.1f}x (mean wall time per run)"


def _fmt(stat: tuple, pct: bool) -> str:
    mean, std, values = stat
    if mean is None:
        return "n/a"
    f = (lambda x: f"{100 * x:.2f}") if pct else (lambda x: f"{x:,.0f}")
    each = ", ".join(f(v) for v in values if v is not None)
    return (
        f(mean)
        + ("" if std is None else f" ± {f(std)}")
        + (f" ({each})" if len(values) > 1 else "")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="cifar10_lt_r100_fast", help="the fast recipe")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="runs/time-to-accuracy")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (0: default)")
    p.add_argument("--device", default=None)
    p.add_argument("--progress", default="log")
    p.add_argument("--official", action="store_true", help="rerun the official recipe (seed 0)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--runs", nargs="+", default=None, metavar="DIR",
        help="finished run directories of the fast recipe to read instead of training",
    )  # fmt: skip
    args = p.parse_args()

    from ncollapse.provenance import cpu_info

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    dirs = args.runs or [_train(args.recipe, s, args, val=True) for s in seeds]
    fast, names, machines = zip(*(_finished(d) for d in dirs))
    label = " + ".join(dict.fromkeys(names))  # the runs' names, each once, in order
    made_on = " + ".join(dict.fromkeys(machines))  # the GPU, else the CPU, each run names
    if args.official:
        official = [_finished(_train("cifar10_lt_r100_etf_dr", 0, args, val=False))[0]]
        source = "rerun now"
    else:
        if not OFFICIAL_RECORD.is_file():
            raise SystemExit(
                f"time_to_accuracy: no record of the official run ({OFFICIAL_RECORD}); "
                "rerun it here with --official"
            )
        official = [json.loads(OFFICIAL_RECORD.read_text())]
        source = f"record {OFFICIAL_RECORD.relative_to(HERE.parent)}"
    rows = [_row("official cifar10_lt_r100_etf_dr", official), _row(label, fast)]
    ratio, ratio_note = time_ratio(official, list(fast))
    cpu = cpu_info()
    if args.json:
        print(
            json.dumps(
                {
                    "cpu": cpu,
                    "rows": rows,
                    "time_ratio": ratio,
                    "time_ratio_note": ratio_note,
                    "official": source,
                },
                indent=2,
            )
        )
        return
    if args.runs:
        print(f"fast runs read from their directories, made on: {made_on}")
    else:
        print(f"fast runs made here on: {made_on}; threads per run: {args.threads}")
        print(f"this CPU: {cpu['model']} ({', '.join(cpu['features'])})")
    print(f"official figures: {source}")
    print("| recipe | epochs | precision | wall s | test acc % | test classes 7-9 % | val acc % |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['label']} | {r['epochs']} | {r['precision']} | {_fmt(r['wall'], False)} | "
            f"{_fmt(r['test'], True)} | {_fmt(r['tail'], True)} | {_fmt(r['val'], True)} |"
        )
    print(ratio_note)


if __name__ == "__main__":
    main()
