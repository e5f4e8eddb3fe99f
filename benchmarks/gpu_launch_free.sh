#!/usr/bin/env bash
# What issue 27 leaves to be measured on a GPU, in one pass of about ten minutes: the machine,
# the CUDA tests (the captured step against the eager one), benchmarks/throughput.py with the
# step captured as a CUDA graph (run.step=graph) and nine seeds packed, against the plain loop in
# the same run; one 200-epoch official run (cifar10_lt_r100_etf_dr) with the captured step; and as
# much of the full-length CIFAR-10-LT grid (benchmarks/full_length.py: 4 methods x 3 seeds, 200
# epochs) as fits, as one pack. Every stage has its own time limit and a failed stage does not
# stop the next. What comes back, under OUTDIR (at most eight files, as a device machine returns
# them): summary.txt (the figures docs/speed.md asks for, with the GPU, driver and torch),
# throughput_cuda.json (a record for benchmarks/records/), records.tar.gz (the official run's and
# each finished grid run's record), results.tar.gz (every log and run directory, no weights) and
# partial.tar.aa, .ab, ... (the grid's unfinished runs, resumable: `cat partial.tar.* | tar -x
# -C benchmarks/records` puts them where `full_length.py --pack 12` unpacks and resumes them).
#
#   benchmarks/gpu_launch_free.sh OUTDIR [BUDGET_SECONDS]      # default budget 560 s
#
# Through the device tool, from the repository root, with CIFAR-10's JPEG copy in the checkout
# first (it is what travels; once, here):
#   mkdir -p shared/datasets && cp ../shared/datasets/cifar10-jpeg.tar.gz shared/datasets/
#   grep -qx /shared/ .git/info/exclude || echo /shared/ >> .git/info/exclude
# then run(command='bash benchmarks/gpu_launch_free.sh "$OUT" 560', timeout_s=600).
#
# Environment: PYTHON (python3), DEVICE (cuda), SKIP (stage names to skip: env data tests
# throughput official grid), PACK (runs in the throughput pack, 9), BATCHES (batches of 128 a
# timed pass, 96), GRID_PACK (12: the whole grid as one pack).
set -u
OUTDIR=${1:?usage: benchmarks/gpu_launch_free.sh OUTDIR [BUDGET_SECONDS]}
BUDGET=${2:-560}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PACK=${PACK:-9}
BATCHES=${BATCHES:-96}
GRID_PACK=${GRID_PACK:-12}
START=$(date +%s)
W=$OUTDIR/work
mkdir -p "$W/records"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
source "$(dirname "$0")/gpu_lib.sh"
finish() {
  timeout -k 5 40 "$PY" benchmarks/gpu_summary.py "$W" --out "$OUTDIR/summary.txt" >"$W/summary.log" 2>&1
  cat "$OUTDIR/summary.txt" 2>/dev/null || tail -n 20 "$W/summary.log"
  [[ -s $W/throughput_cuda.json ]] && cp "$W/throughput_cuda.json" "$OUTDIR/"
  tar -czf "$OUTDIR/records.tar.gz" -C "$W" --exclude=partial records 2>/dev/null
  pack_results
}
trap finish EXIT
link_shared

env_and_data

# the captured step against the eager one, packing against runs alone (CPU and GPU tests)
TAIL=25 stage tests 150 "$PY" -m pytest -q -p no:cacheprovider -rfEs tests/test_graphs.py \
  tests/test_cuda.py tests/test_pack.py

# the official recipe's step: plain loop, engine (bf16, fp32), captured (bf16, fp32), 9 packed
TAIL=5 stage throughput 170 bash -c "'$PY' benchmarks/throughput.py --device '$DEVICE' \
  --batches '$BATCHES' --repeats 2 --pack '$PACK' --json > '$W/throughput_cuda.json'"

# one 200-epoch official run, the step captured: its training seconds (test every 10 epochs,
# collapse every 50, as the CPU yardstick run measured)
stage official 170 "$PY" -m ncollapse train --config cifar10_lt_r100_etf_dr --device "$DEVICE" \
  --set run.step=graph --set eval.every=10 --set eval.collapse_every=50 --set run.threads=4 \
  --set run.progress=log --out "$W/official" --name cifar10_lt_r100_etf_dr_200ep_graph
"$PY" - "$W" <<'EOF'
import json, pathlib, shlex, sys
w = pathlib.Path(sys.argv[1])
run = w / "official" / "cifar10_lt_r100_etf_dr_200ep_graph"
if (run / "summary.json").is_file():
    s = json.loads((run / "summary.json").read_text())
    env = json.loads((run / "env.json").read_text())
    s.update(machine=env.get("cuda_device"), torch=env.get("torch"), step=env.get("step"),
             command=shlex.join(["ncollapse", *env.get("argv", [])[1:]]))
    (w / "records" / f"{run.name}.json").write_text(json.dumps(s, indent=1) + "\n")
EOF

# the full-length grid, as much as fits, as one pack (finished runs leave their records), then
# the unfinished runs' resumable files, in pieces under 16 MiB (partial.tar.aa, .ab, ...)
limit=$(($(left) - 75))
TAIL=20 stage grid "$limit" "$PY" benchmarks/full_length.py --pack "$GRID_PACK" --device "$DEVICE" \
  --threads 4 --out "$W/full_length" --records "$W/records"
stage partial 40 bash -c "'$PY' benchmarks/full_length.py --save-partial --out '$W/full_length' \
  --records '$W/records' && tar -cf - -C '$W/records' partial | split -b 16000k - '$OUTDIR/partial.tar.'"
