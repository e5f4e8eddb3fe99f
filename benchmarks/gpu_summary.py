"""What benchmarks/gpu_launch_free.sh measured, as the figures issue 27 asks for: the GPU, its
driver and torch; the official recipe's step captured as a CUDA graph against the plain loop
(target: at least 5 times its images per second), nine seeds packed against one run alone; the
200-epoch official run's training seconds (target: at most 60); how far the full-length grid
got as one pack; the CUDA tests' result line.

    python benchmarks/gpu_summary.py WORKDIR [--out summary.txt]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path


def _machine() -> list[str]:
    lines = []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        lines.append(f"GPU, driver, memory: {out.stdout.strip() or 'nvidia-smi said nothing'}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append(f"GPU: nvidia-smi not available ({exc})")
    try:
        import torch

        cuda = torch.version.cuda
        lines.append(
            f"torch {torch.__version__}, CUDA {cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    except ImportError:
        lines.append("torch: not importable")
    return lines


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.open() if line.strip()]


def _throughput(w: Path) -> list[str]:
    path = w / "throughput_cuda.json"
    try:
        t = json.loads(path.read_text())
    except (OSError, ValueError):
        return [f"throughput: no result ({path.name} missing or incomplete; see throughput.log)"]
    rate = t["images_per_s"]
    lines = [f"throughput ({t.get('cuda_device')}, {t['images_per_pass']} images a pass, best of "
             f"{len(t['all_runs']['plain'])}):"]  # fmt: skip
    for k, v in rate.items():
        lines.append(f"  {k:<20} {v:10.0f} images/s  x{v / rate['plain']:.2f} vs plain")
    graph = rate.get("engine_graph")
    if graph:
        verdict = "met" if graph >= 5 * rate["plain"] else "NOT met"
        lines.append(
            f"  captured step / plain loop: x{graph / rate['plain']:.2f} (target 5x: {verdict})"
        )
    packed = [k for k in rate if k.startswith("engine_pack")]
    for k in packed:
        lines.append(
            f"  {k} / one run alone (engine): x{rate[k] / rate['engine']:.2f}; "
            f"per run {rate[k] / t['packed_runs']:.0f} images/s"
        )
    return lines


def _official(w: Path) -> list[str]:
    run = w / "official" / "cifar10_lt_r100_etf_dr_200ep_graph"
    summary = run / "summary.json"
    train = [r for r in _records(run / "metrics.jsonl") if r.get("kind") == "train"]
    env = json.loads((run / "env.json").read_text()) if (run / "env.json").is_file() else {}
    step = env.get("step", "?")
    if summary.is_file():
        s = json.loads(summary.read_text())
        verdict = "met" if s["train_seconds"] <= 60 else "NOT met"
        return [
            f"official 200-epoch run (step {step}): {s['train_seconds']:.1f} s of training "
            f"(target 60 s: {verdict}), {s['wall_seconds']:.1f} s in all, test "
            f"{100 * s['final']['acc']:.2f} %"
        ]
    if len(train) > 2:
        per = statistics.median(r["seconds"] for r in train[1:])
        return [
            f"official run (step {step}): stopped after {len(train)} epochs; median {per:.3f} s an "
            f"epoch -> 200 epochs of training ~ {200 * per:.0f} s (target 60 s)"
        ]
    return ["official run: no epoch finished (see official.log)"]


def _grid(w: Path) -> list[str]:
    root = w / "full_length"
    runs = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not runs:
        return ["full-length grid: nothing trained (see grid.log)"]
    lines = ["full-length grid, as one pack:"]
    seconds = []
    for run in runs:
        train = [r for r in _records(run / "metrics.jsonl") if r.get("kind") == "train"]
        seconds += [r["seconds"] for r in train[1:]]
        done = (run / "summary.json").is_file()
        last = next(
            (r for r in reversed(_records(run / "metrics.jsonl")) if r.get("kind") == "eval"), {}
        )
        acc = f", test {100 * last['acc']:.2f} % at epoch {last['epoch']}" if last else ""
        lines.append(f"  {run.name}: {'finished' if done else f'{len(train)} of 200 epochs'}{acc}")
    if seconds:
        per = statistics.median(seconds)
        lines.append(
            f"  the pack's median epoch: {per:.2f} s of training -> 200 epochs ~ {200 * per:.0f} s "
            "(evaluation every epoch and collapse every 10 on top)"
        )
    records = sorted(p.name for p in (w / "records").glob("*.json"))
    lines.append(f"  records: {', '.join(records) or 'none'}")
    return lines


def _tests(w: Path) -> list[str]:
    log = w / "tests.log"
    if not log.is_file():
        return ["tests: not run"]
    tail = [line for line in log.read_text().splitlines() if line.strip()]
    return [f"tests: {tail[-1] if tail else 'no output'}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    w = args.workdir
    lines = [*_machine(), *_tests(w), *_throughput(w), *_official(w), *_grid(w)]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
