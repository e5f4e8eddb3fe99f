"""Streaming CollapseAccumulator vs a straightforward in-memory NumPy implementation.

Default: N = 200,000 features, d = 512, K = 100 with an exponential long-tail profile
(imbalance 0.01), generated in chunks of 10,000 from per-chunk seeds, so both contenders see
exactly the same numbers. Each contender runs in its own subprocess (fresh interpreter, same
imports, same thread count); each measures

- compute time: wall time minus the time spent generating chunks (the streaming contender
  generates every chunk twice: two passes, the second for NC4);
- peak memory: the rise of the process's peak RSS (VmHWM, reset through
  /proc/self/clear_refs after imports and warm-up) above its RSS at that point.

The in-memory contender concatenates the chunks into one (N, d) array and computes the same
quantities (NC1, CDNV, NC2, NC3, NC4) in float64 with NumPy; the streaming one feeds the chunks
to ncollapse.metrics.measure_collapse and never holds more than one chunk.

    python benchmarks/collapse_metrics.py            # full size (about a minute, ~2 GB RAM)
    python benchmarks/collapse_metrics.py --quick    # N = 20,000, d = 128, K = 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 10_000


def _counts_profile(k: int, imbalance: float) -> np.ndarray:
    n = np.array([imbalance ** (i / (k - 1)) for i in range(k)])
    return n / n.sum()


def make_problem(n: int, d: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 0.3 + 0.5
    classifier = centres + 0.3 * rng.normal(size=(k, d)).astype(np.float32)
    probs = _counts_profile(k, 0.01)

    def chunks():
        for i, start in enumerate(range(0, n, CHUNK)):
            m = min(CHUNK, n - start)
            r = np.random.default_rng([seed, i])
            y = r.choice(k, size=m, p=probs)
            x = centres[y] + r.standard_normal(size=(m, d), dtype=np.float32) * 3.0
            yield x, y

    return chunks, classifier


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def numpy_metrics(x: np.ndarray, y: np.ndarray, w: np.ndarray, k: int) -> dict:
    """The textbook in-memory computation (docs/metrics.md), float64 throughout."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    counts = np.bincount(y, minlength=k)
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    mc = means - means.mean(0)
    centred = x - means[y]
    sigma_w = centred.T @ centred / len(y)
    sigma_b = mc.T @ mc / k
    nc1 = float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / k)
    var = np.bincount(y, weights=(centred**2).sum(1), minlength=k) / counts
    iu = np.triu_indices(k, 1)
    dist2 = ((means[iu[0]] - means[iu[1]]) ** 2).sum(1)
    cdnv = float(np.mean((var[iu[0]] + var[iu[1]]) / (2 * dist2)))
    unit = mc / np.linalg.norm(mc, axis=1, keepdims=True)
    g = unit @ unit.T
    target = np.eye(k) - 1.0 / k
    etf = float(np.linalg.norm(g / np.linalg.norm(g) - target / np.linalg.norm(target)))
    nc3 = float(np.linalg.norm(w / np.linalg.norm(w) - mc / np.linalg.norm(mc)) ** 2)
    pred = (x @ w.T).argmax(1)
    d2 = (x**2).sum(1, keepdims=True) - 2 * x @ means.T + (means**2).sum(1)
    nc4 = float((pred != d2.argmin(1)).mean())
    return {"nc1": nc1, "cdnv": cdnv, "nc2_etf_error": etf, "nc3": nc3, "nc4": nc4}


def worker(mode: str, n: int, d: int, k: int) -> dict:
    import torch

    from ncollapse.metrics import measure_collapse

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    chunks, w = make_problem(n, d, k)
    # warm-up: touch the code paths once on tiny data so lazy imports/allocs are not counted
    xs, ys = next(iter(chunks()))
    numpy_metrics(xs[:500], np.arange(500) % k, w, k)
    warm = [(xs[:500], None, np.arange(500) % k)]
    measure_collapse(lambda: warm, k, d, classifier=w)
    del xs, ys
    warm = None  # drop the warm-up data before measuring
    have_reset = _reset_peak()
    base = _rss_kb("VmRSS")
    gen_seconds = 0.0

    def timed_chunks():
        nonlocal gen_seconds
        it = chunks()
        while True:
            t = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                return
            gen_seconds += time.perf_counter() - t
            yield x, y

    t0 = time.perf_counter()
    if mode == "stream":
        res = measure_collapse(
            lambda: ((torch.from_numpy(x), None, torch.from_numpy(y)) for x, y in timed_chunks()),
            k,
            d,
            classifier=w,
        )
        res = {key: res[key] for key in ("nc1", "cdnv", "nc2_etf_error", "nc3", "nc4")}
    else:
        parts = list(timed_chunks())
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        del parts
        res = numpy_metrics(x, y, w, k)
    total = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    return {
        "mode": mode,
        "seconds": total - gen_seconds,
        "gen_seconds": gen_seconds,
        "peak_delta_mb": (peak - base) / 1024 if have_reset else None,
        "metrics": res,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=20,000, d=128, K=20")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per contender")
    ap.add_argument("--worker", choices=["stream", "numpy"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.k = 20_000, 128, 20
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d, args.k)))
        return 0
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BENCH_THREADS"):
        env[var] = str(args.threads)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    print(f"N={args.n:,} d={args.d} K={args.k} (long-tail 0.01), {args.threads} thread(s)")
    out = {}
    for mode in ("stream", "numpy"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--n",
            str(args.n),
            "--d",
            str(args.d),
            "--k",
            str(args.k),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = out[mode]
        peak = "n/a" if r["peak_delta_mb"] is None else f"{r['peak_delta_mb']:.1f} MB"
        print(
            f"{mode:>7}: compute {r['seconds']:.2f} s (+{r['gen_seconds']:.2f} s generating), "
            f"peak RSS rise {peak}"
        )
    s, m = out["stream"], out["numpy"]
    print(f"time ratio   stream/numpy = {s['seconds'] / m['seconds']:.2f}")
    if s["peak_delta_mb"] and m["peak_delta_mb"]:
        print(f"memory ratio stream/numpy = {s['peak_delta_mb'] / m['peak_delta_mb']:.3f}")
    for key, ref in m["metrics"].items():
        got = s["metrics"][key]
        print(
            f"  {key:14s} numpy {ref:.10g}  stream {got:.10g}  "
            f"rel.diff {abs(got - ref) / max(abs(ref), 1e-300):.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
