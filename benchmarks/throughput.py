"""Training throughput of the official recipe's step (ResNet-32, batch 128, CIFAR-10-LT): the
ncollapse engine against a plain PyTorch loop, measured in the same process, alternating.

The engine runs the full official recipe (random crop + flip, mixup, DR loss with per-batch
class weights, SGD with momentum and weight decay) as `ncollapse train` runs it: NHWC layout and,
on CPUs with bf16 instructions, bf16 autocast. The plain loop is the minimal loop a user would
write: gather the batch, convert and normalise, forward in fp32 NCHW, cross-entropy, backward,
step (no augmentation, no mixup). Also shown: the engine with each lever switched off, so every
figure has its baseline beside it; on a GPU the engine with its step captured as a CUDA graph
(``run.step=graph``, in bf16 and fp32), and with ``--pack N`` N seeds trained as one batched
model (``ncollapse sweep --pack``: the images per second of all N runs together). The CPU and its features are printed: the ratio depends on
them (bf16 needs avx512_bf16 or AMX; without them the engine trains in fp32).

    python benchmarks/throughput.py                  # CIFAR-10-LT from the JPEG copy when present
    python benchmarks/throughput.py --synthetic      # random images of the same shape
    python benchmarks/throughput.py --isa avx2       # as on an AVX2-only CPU (oneDNN and ATen
                                                     # limited to AVX2, no bf16), same machine
    python benchmarks/throughput.py --device cuda    # on a GPU (AMP as in training), with the
                                                     # step captured as a CUDA graph too
    python benchmarks/throughput.py --pack 9         # and nine seeds trained as one pack
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ISA_ENV = {  # what --isa sets before torch starts (oneDNN, ATen kernels, our bf16 switch)
    "avx2": {"DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "NCOLLAPSE_CPU_BF16": "0"},
    "avx512": {"DNNL_MAX_CPU_ISA": "AVX512_CORE", "NCOLLAPSE_CPU_BF16": "0"},
}


def _bundle(args: argparse.Namespace, cfg):
    import torch

    from ncollapse.data import load_data
    from ncollapse.data.base import ArrayDataset, DataBundle

    if not args.synthetic:
        try:
            return load_data(cfg.data)
        except Exception as exc:  # no CIFAR here: fall back on random images, and say so
            print(f"(CIFAR-10 not found: {str(exc).splitlines()[0]}; using synthetic images)")
    g = torch.Generator().manual_seed(0)
    n = 12406
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    ds = ArrayDataset(images, labels, [str(i) for i in range(10)])
    counts = torch.bincount(labels, minlength=10).tolist()
    return DataBundle(
        ds, ds, counts, {"source": "synthetic"}, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2), "standard"
    )


def _subset(bundle, n: int):
    import torch

    from ncollapse.data.base import ArrayDataset, DataBundle

    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(bundle.train.labels.numel(), generator=g)[:n]
    train = ArrayDataset(bundle.train.images[idx], bundle.train.labels[idx], bundle.train.classes)
    return DataBundle(
        train, bundle.test, bundle.class_counts, bundle.info, bundle.mean, bundle.std, "standard"
    )


def engine_rate(cfg, bundle, device) -> float:
    from ncollapse.runner import build_trainer

    trainer = build_trainer(cfg, bundle, device)
    trainer.train_epoch(0)  # warm-up (allocator, oneDNN primitive cache; the capture of a graph)
    return trainer.train_epoch(1)["images_per_s"]


def pack_rate(cfg, bundle, device, runs: int) -> float:
    """Images per second of ``runs`` seeds of ``cfg`` trained as one pack (all runs' images)."""
    from ncollapse.engine.pack import PackedTrainer
    from ncollapse.runner import build_trainer

    trainers = [build_trainer(cfg.replace(seed=s), bundle, device) for s in range(runs)]
    pack = PackedTrainer(trainers)
    pack.train_epoch(0)  # warm-up
    records = pack.train_epoch(1)
    return sum(r["images_per_s"] for r in records.values())  # one shared epoch time


def plain_rate(cfg, bundle, device) -> float:
    import torch
    import torch.nn.functional as F

    from ncollapse.build import build_network

    torch.manual_seed(0)
    net = build_network(cfg, 10, 3).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x_all = bundle.train.images.to(device)
    y_all = bundle.train.labels.to(device)
    mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)
    bs = cfg.optim.batch_size
    amp = device.type == "cuda"

    def epoch() -> float:
        net.train()
        perm = torch.randperm(x_all.shape[0], device=device)
        start = time.perf_counter()
        for i in range(0, x_all.shape[0], bs):
            idx = perm[i : i + bs]
            x = (x_all[idx].float() / 255 - mean) / std
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = net(x)
            loss = F.cross_entropy(out.logits.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x_all.shape[0] / (time.perf_counter() - start)

    epoch()  # warm-up
    return epoch()


def timing_setup(args: argparse.Namespace):
    """The device and the settings of two timed epochs (quiet, no decay, no warning about it),
    with ``args.threads`` torch threads."""
    import torch

    from ncollapse.engine.state import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = ["optim.epochs=2", "run.progress=none", "run.tensorboard=false", "optim.milestones=[]"]
    return device, [*base, f"run.device={device}"]


def measure(args: argparse.Namespace) -> dict:
    import torch

    from ncollapse.composition import compose
    from ncollapse.engine.precision import autocast_dtype, cpu_flags
    from ncollapse.provenance import cpu_info

    device, base = timing_setup(args)
    base.append("optim.warmup_epochs=0")
    variants = {
        "engine": [],
        "engine_fp32": ["run.amp=false"],
        "engine_fp32_nchw": ["run.amp=false", "run.channels_last=false"],
    }
    if autocast_dtype(device, True) is None:  # no native bf16 here: the fp32 rows say it all
        del variants["engine_fp32"]
    if device.type == "cuda":  # the step captured as a CUDA graph (elsewhere the eager step)
        variants["engine_graph"] = ["run.step=graph"]
        variants["engine_fp32_graph"] = ["run.step=graph", "run.amp=false"]
    cfgs = {
        k: compose("cifar10_lt_r100_etf_dr", overrides=[*base, *v]) for k, v in variants.items()
    }
    bundle = _subset(_bundle(args, cfgs["engine"]), args.batches * 128)
    packs = {f"engine_pack{args.pack}": cfgs["engine"]} if args.pack > 1 else {}
    rates: dict[str, list[float]] = {"plain": [], **{k: [] for k in [*cfgs, *packs]}}
    for _ in range(args.repeats):
        rates["plain"].append(plain_rate(cfgs["engine"], bundle, device))
        for k, cfg in cfgs.items():
            rates[k].append(engine_rate(cfg, bundle, device))
        for k, cfg in packs.items():  # all the pack's images per second
            rates[k].append(pack_rate(cfg, bundle, device, args.pack))
    best = {k: max(v) for k, v in rates.items()}
    precision = autocast_dtype(device, True)
    return {
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_info(),
        "isa_limit": args.isa,
        "cpu_flags_bf16": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()),
        "engine_precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
            precision
        ],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "images_per_pass": bundle.train.labels.numel(),
        "images_per_s": best,
        "packed_runs": args.pack if args.pack > 1 else None,
        "ratios_vs_plain": {k: best[k] / best["plain"] for k in best if k != "plain"},
        "all_runs": rates,
    }


def machine_line(result: dict) -> str:
    """The first line of a timing's report: the device (GPU or CPU model), threads, torch."""
    model = result["cuda_device"] or result["cpu"]["model"]
    return (
        f"device {result['device']} ({model}), {result['threads']} threads, torch {result['torch']}"
    )


def timing_options(p: argparse.ArgumentParser, device: str, batches: int) -> None:
    """The options of a timing: device, pass size, repeats, threads, the data, --json."""
    p.add_argument("--device", default=device)
    p.add_argument("--batches", type=int, default=batches, help="batches of 128 per timed pass")
    p.add_argument("--repeats", type=int, default=2, help="passes per contender (best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR")
    p.add_argument("--json", action="store_true")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_options(p, "auto", 24)
    p.add_argument(
        "--pack", type=int, default=0, metavar="N",
        help="also time N seeds trained as one pack (ncollapse sweep --pack), all N runs' images",
    )  # fmt: skip
    p.add_argument(
        "--isa", choices=sorted(ISA_ENV), default=None,
        help="limit the CPU kernels to an instruction set (runs in a subprocess)",
    )  # fmt: skip
    args = p.parse_args()
    if args.isa and os.environ.get("NCOLLAPSE_BENCH_CHILD") != "1":
        env = {**os.environ, **ISA_ENV[args.isa], "NCOLLAPSE_BENCH_CHILD": "1"}
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    cpu = result["cpu"]
    print(machine_line(result))
    print(
        f"CPU features: {', '.join(cpu['features']) or 'none of note'}; ATen kernels "
        f"{cpu['torch_capability']}"
        + (f"; limited to {args.isa.upper()} for this run" if args.isa else "")
    )
    print(
        f"engine trains in {result['engine_precision']}; {result['images_per_pass']} images per "
        "timed pass, best of the repeats"
    )
    for k, v in result["images_per_s"].items():
        ratio = "" if k == "plain" else f"  x{result['ratios_vs_plain'][k]:.2f} vs plain"
        print(f"  {k:<18} {v:8.1f} images/s{ratio}")
    print(
        f"ratio engine / plain loop: {result['ratios_vs_plain']['engine']:.2f} "
        "(the training step of the official recipe)"
    )


if __name__ == "__main__":
    main()
