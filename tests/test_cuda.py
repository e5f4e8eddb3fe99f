"""The CUDA path: training with AMP, float32 measurement, and CPU/GPU agreement of the losses and
metrics (exact resume on a GPU is in tests/test_fastpath.py). Skipped where no GPU is visible (CI
has none); on a GPU machine: ``pytest tests/test_cuda.py tests/test_fastpath.py``."""

from __future__ import annotations

import json
import math

import pytest
import torch

import ncollapse
from ncollapse.engine.evaluate import network_outputs
from ncollapse.engine.precision import autocast_dtype
from ncollapse.metrics import CollapseAccumulator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
QUIET = {"run": {"progress": "none", "tensorboard": False, "device": "cuda"}}


def test_autocast_dtype_on_the_gpu_is_bf16_or_fp16():
    dtype = autocast_dtype(CUDA, True)
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert autocast_dtype(CUDA, False) is None


def test_training_on_cuda_with_amp_learns_and_records_the_gpu(tmp_path):
    over = {**QUIET, "eval": {"every": 0, "collapse_splits": ["train", "test"]}}
    result = ncollapse.train(overrides=over, epochs=6, out=tmp_path, name="gpu")
    s = result.summary
    assert s["final"]["acc"] > 0.6  # the embedded digits learn within six epochs
    env = json.loads((result.run_dir / "env.json").read_text())
    assert "cuda" in json.dumps(env).lower()
    assert env["precision"] in ("bf16", "fp16")
    state = torch.load(result.run_dir / "model.pt", map_location="cpu")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    for split in ("train", "test"):
        for key in ("nc1", "nc2_etf_error", "nc3", "nc4"):
            value = s["collapse"][split][key]
            assert isinstance(value, float) and math.isfinite(value), (split, key)


def test_measurements_are_float32_under_cuda_autocast():
    head = ncollapse.build_head("etf", 16, 4)
    body = torch.nn.Sequential(torch.nn.Linear(8, 16), head).to(CUDA)
    x = torch.randn(32, 8, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats, logits, _ = next(network_outputs(body, [(x, torch.zeros(32, device=CUDA))]))
    assert feats.dtype == torch.float32 and logits.dtype == torch.float32
    with torch.no_grad():
        ref = body.eval()(x)
    # fp32 (TF32 off for this comparison would be exact; allow TF32 rounding)
    assert torch.allclose(logits, ref.logits, atol=1e-2)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        low = body(x).logits
    assert low.dtype == torch.bfloat16  # without the guard the logits would be bf16


def test_collapse_statistics_agree_between_cpu_and_gpu():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(600, 12, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, 5, (600,), generator=g)
    w = torch.randn(5, 12, generator=g)
    out = {}
    for dev in ("cpu", "cuda"):
        acc = CollapseAccumulator(5, 12, device=torch.device(dev))
        acc.update(feats.to(dev), labels.to(dev))
        acc.update_nc4(feats.to(dev), labels.to(dev), classifier=w.to(dev))
        out[dev] = acc.compute(w.to(dev), tail_classes=[3, 4])
    for k, v in out["cpu"].items():
        if isinstance(v, float) and math.isfinite(v):
            assert out["cuda"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_dr_loss_agrees_between_cpu_and_gpu():
    from ncollapse.losses import DotRegressionLoss

    head = ncollapse.build_head("etf", 16, 10)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=g)
    loss = DotRegressionLoss()
    frame = head.frame.double()
    cpu = loss(h, y, frame)
    gpu = loss(h.to(CUDA), y.to(CUDA), frame.to(CUDA))
    assert float(gpu) == pytest.approx(float(cpu), rel=1e-12)
