"""Training throughput of ResNet-32 at batch 128: the ncollapse engine against a plain PyTorch loop.

Both train the same model (ResNet-32 + ETF head) on the same resident uint8 CIFAR-10-LT tensors
in the same process, alternating, best of ``--repeats``. The engine runs the full official recipe
(random crop + flip, mixup, DR loss with per-batch class weights, SGD with momentum and weight
decay); the plain loop is the minimal loop a user would write: gather the batch, convert and
normalise, forward, cross-entropy, backward, step (no augmentation, no mixup). The ratio
engine / plain must be >= 1.0: the engine adds no overhead, and its NHWC layout buys speed.

    python benchmarks/throughput.py                # CIFAR-10-LT from the JPEG copy when present
    python benchmarks/throughput.py --synthetic    # random images of the same shape
    python benchmarks/throughput.py --device cuda  # on a GPU (AMP on, as in training)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ncollapse.build import build_network
from ncollapse.composition import compose
from ncollapse.data import load_data
from ncollapse.data.base import ArrayDataset, DataBundle
from ncollapse.engine.loop import resolve_device
from ncollapse.runner import build_trainer


def _bundle(args: argparse.Namespace, cfg) -> DataBundle:
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


def _subset(bundle: DataBundle, n: int) -> DataBundle:
    idx = torch.randperm(bundle.train.labels.numel(), generator=torch.Generator().manual_seed(1))[
        :n
    ]
    train = ArrayDataset(bundle.train.images[idx], bundle.train.labels[idx], bundle.train.classes)
    return DataBundle(
        train,
        bundle.test,
        bundle.class_counts,
        bundle.info,
        bundle.mean,
        bundle.std,
        bundle.augment,
    )


def engine_rate(cfg, bundle: DataBundle, device: torch.device) -> float:
    trainer = build_trainer(cfg, bundle, device)
    trainer.train_epoch(0)  # warm-up (allocator, oneDNN primitive cache)
    return trainer.train_epoch(1)["images_per_s"]


def plain_rate(cfg, bundle: DataBundle, device: torch.device) -> float:
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, default=24, help="batches of 128 per timed pass")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = [
        "optim.epochs=2",
        "run.progress=none",
        "run.tensorboard=false",
        "optim.warmup_epochs=0",
        f"run.device={device}",
    ]
    cfg = compose("cifar10_lt_r100_etf_dr", overrides=base)
    cfg_nchw = compose("cifar10_lt_r100_etf_dr", overrides=[*base, "run.channels_last=false"])
    bundle = _subset(_bundle(args, cfg), args.batches * cfg.optim.batch_size)
    rates: dict[str, list[float]] = {"engine": [], "engine_nchw": [], "plain": []}
    for _ in range(args.repeats):
        rates["plain"].append(plain_rate(cfg, bundle, device))
        rates["engine"].append(engine_rate(cfg, bundle, device))
        rates["engine_nchw"].append(engine_rate(cfg_nchw, bundle, device))
    best = {k: max(v) for k, v in rates.items()}
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images_per_pass": bundle.train.labels.numel(),
        "images_per_s": best,
        "ratio_engine_vs_plain": best["engine"] / best["plain"],
        "ratio_engine_nchw_vs_plain": best["engine_nchw"] / best["plain"],
        "all_runs": rates,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"device {device}, {torch.get_num_threads()} threads, {result['images_per_pass']} images per timed pass"
        )
        for k in ("plain", "engine", "engine_nchw"):
            print(f"  {k:<12} {best[k]:8.1f} images/s")
        print(f"ratio engine / plain loop: {result['ratio_engine_vs_plain']:.2f} (must be >= 1.0)")
        print(
            f"ratio engine (NCHW layout) / plain loop: {result['ratio_engine_nchw_vs_plain']:.2f}"
        )


if __name__ == "__main__":
    main()
