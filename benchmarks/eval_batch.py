"""Evaluation speed by ``eval.batch_size``: the trainer's own test-set pass (fp32, as every
evaluation runs, in the run's memory layout) at each batch size, alternating in one process, for
the official recipe's ResNet-32 and the fast recipe's fastnet; the images per second and the
ratio to batch 512 (the default until 128 replaced it).

Evaluation is a large share of a run that tests every epoch: in the 200-epoch CIFAR-10-LT grid
(``full_length.py``) the 10,000 test images took about as long as the epoch's 12,406 training
images at batch 512 on one CPU core. On a CPU smaller batches keep each layer's activations in
cache. The machine (CPU model and its bf16 features, or the GPU) is printed with the figures.

    python benchmarks/eval_batch.py                  # CIFAR-10's test set when present
    python benchmarks/eval_batch.py --synthetic --threads 1 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (64, 128, 256, 512)
#: nothing but the evaluation pass is timed: no warm-up epochs to fit into the two-epoch stub
EVAL_ONLY = ("optim.warmup_epochs=0", "eval.collapse_every=0")
RECIPES = {"resnet32": "cifar10_lt_r100_etf_dr", "fastnet": "cifar10_lt_r100_fast"}


def _throughput():
    """benchmarks/throughput.py (its data loading, timing options and machine description)."""
    if "throughput" not in sys.modules:
        spec = importlib.util.spec_from_file_location("throughput", HERE / "throughput.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["throughput"] = module
        spec.loader.exec_module(module)
    return sys.modules["throughput"]


def eval_rate(trainer, images: int) -> float:
    """Images per second of one evaluation pass over the test split (after a warm-up pass)."""
    trainer.evaluate(0)  # warm-up: the oneDNN primitives of these shapes
    start = time.perf_counter()
    trainer.evaluate(0)
    return images / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict:
    import torch

    from ncollapse.composition import compose
    from ncollapse.provenance import cpu_info
    from ncollapse.runner import build_trainer

    tp = _throughput()
    device, base = tp.timing_setup(args)
    rates: dict[str, dict[int, list[float]]] = {}
    for net, recipe in RECIPES.items():
        cfgs = {
            bs: compose(recipe, overrides=[*base, *EVAL_ONLY, f"eval.batch_size={bs}"])
            for bs in SIZES
        }
        bundle = tp._bundle(args, cfgs[512])
        n = min(args.images, bundle.test.labels.numel())
        bundle = dataclasses.replace(bundle, test=_first(bundle.test, n))
        trainers = {bs: build_trainer(cfg, bundle, device) for bs, cfg in cfgs.items()}
        rates[net] = {bs: [] for bs in SIZES}
        for _ in range(args.repeats):  # alternating: the contenders share the machine's load
            for bs, trainer in trainers.items():
                rates[net][bs].append(eval_rate(trainer, n))
    # keyed "batch_<N>": names the docs' figure expressions can read
    best = {net: {f"batch_{bs}": max(v) for bs, v in r.items()} for net, r in rates.items()}
    return {
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_info(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "images_per_pass": n,
        "images_per_s": best,
        "ratio_vs_512": {net: {k: r[k] / r["batch_512"] for k in r} for net, r in best.items()},
        "all_runs": {net: {f"batch_{bs}": v for bs, v in r.items()} for net, r in rates.items()},
    }


def _first(ds, n: int):
    from ncollapse.data.base import ArrayDataset

    return ArrayDataset(ds.images[:n], ds.labels[:n], ds.classes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tp = _throughput()
    tp.timing_options(p, "auto", 24)
    p.add_argument("--images", type=int, default=4096, help="test images per timed pass")
    args = p.parse_args(argv)
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    cpu = result["cpu"]
    print(
        f"{tp.machine_line(result)}; CPU features: {', '.join(cpu['features']) or 'none of note'}"
    )
    print(
        f"evaluation in fp32, {result['images_per_pass']} test images a pass, best of the repeats"
    )
    for net, r in result["images_per_s"].items():
        cells = "  ".join(
            f"{k.removeprefix('batch_')}: {v:,.0f} img/s (x{result['ratio_vs_512'][net][k]:.2f})"
            for k, v in r.items()
        )
        print(f"{net:9s} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
