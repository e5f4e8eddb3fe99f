"""Packed runs against the same runs one after another (``ncollapse sweep --pack N``), for
ResNet-32 (the official recipe) and fastnet (the fast recipe), measured in the same process,
alternating.

Sequential: one run's images per second (N runs one after another train at that rate). Packed:
N seeds trained as one batched model (:class:`ncollapse.engine.pack.PackedTrainer`), the images
per second of all N runs together. The ratio packed / sequential is what a sweep gains (> 1) or
loses (< 1) by packing on this machine. The CPU, its bf16 instructions and the precision the
runs train in are printed: the ratio depends on them.

    python benchmarks/pack.py                     # CIFAR-10-LT from its JPEG copy when present
    python benchmarks/pack.py --synthetic --runs 4 --threads 1
    python benchmarks/pack.py --json > benchmarks/records/pack_cpu.json
"""

from __future__ import annotations

import argparse
import json

from throughput import (
    _bundle,
    _subset,
    engine_rate,
    machine_line,
    pack_rate,
    timing_options,
    timing_setup,
)

#: backbone -> (recipe, its settings for two timed epochs: no warm-up to cut short)
RECIPES = {
    "resnet32": ("cifar10_lt_r100_etf_dr", ["optim.warmup_epochs=0"]),
    "fastnet": ("cifar10_lt_r100_fast", ["optim.warmup_epochs=1"]),  # a linear ramp needs one
}


def measure(args: argparse.Namespace) -> dict:
    import torch

    from ncollapse.composition import compose
    from ncollapse.engine.precision import autocast_dtype, cpu_flags
    from ncollapse.provenance import cpu_info

    device, base = timing_setup(args)
    base += ["optim.ema=0", *(["run.amp=false"] if args.fp32 else [])]
    cfgs = {
        name: compose(recipe, overrides=[*base, *own]) for name, (recipe, own) in RECIPES.items()
    }
    bundle = _subset(_bundle(args, cfgs["resnet32"]), args.batches * 128)
    rates: dict[str, dict[str, list[float]]] = {
        name: {"sequential": [], "packed": []} for name in cfgs
    }
    for _ in range(args.repeats):
        for name, cfg in cfgs.items():
            rates[name]["sequential"].append(engine_rate(cfg, bundle, device))
            rates[name]["packed"].append(pack_rate(cfg, bundle, device, args.runs))
    best = {name: {k: max(v) for k, v in r.items()} for name, r in rates.items()}
    precision = None if args.fp32 else autocast_dtype(device, True)
    return {
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_info(),
        "avx512_bf16": "avx512_bf16" in cpu_flags(),
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[precision],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "runs": args.runs,
        "images_per_pass": bundle.train.labels.numel(),
        "images_per_s": best,
        "ratio_packed_vs_sequential": {
            name: b["packed"] / b["sequential"] for name, b in best.items()
        },
        "all_runs": rates,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_options(p, "cpu", 8)
    p.add_argument("--runs", type=int, default=4, help="runs in the pack (default 4)")
    p.add_argument("--fp32", action="store_true", help="train in fp32 (run.amp=false)")
    args = p.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{machine_line(result)}; avx512_bf16: "
        f"{'yes' if result['avx512_bf16'] else 'no'}; the runs train in {result['precision']}"
    )
    print(f"{result['runs']} runs packed; {result['images_per_pass']} images per run and pass")
    for name, b in result["images_per_s"].items():
        ratio = result["ratio_packed_vs_sequential"][name]
        print(
            f"  {name:<9} sequential {b['sequential']:8.1f} images/s   packed {b['packed']:8.1f} "
            f"images/s   packed / sequential x{ratio:.2f}"
        )


if __name__ == "__main__":
    main()
