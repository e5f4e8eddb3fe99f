#!/usr/bin/env bash
# One timed pass over the GPU path, for a GPU machine held for a few minutes: the machine, the
# engine / plain-loop throughput, the fast recipe (3 seeds, alone on the GPU), the official
# recipe's time per epoch, the CUDA tests, and a 30-epoch comparison of ETF + DR with CE and the
# long-tail baselines on their own recipes (3 seeds, nine runs sharing the GPU); optionally
# validation-only trials of the fast recipe beside them. Every stage has its own time limit and a
# failed stage does not stop the next; the logs and run directories (no checkpoints) end up in
# OUTDIR/results.tar.gz. docs/speed.md and docs/claims.md (row 7) hold what it measured.
#
#   benchmarks/gpu_check.sh OUTDIR [BUDGET_SECONDS]     # default budget 540 s
#
# Environment: PYTHON (default python3), DEVICE (default cuda), SKIP (stage names to skip),
# FAST_SEEDS (default 0,1,2); the comparison: EPOCHS7 (30), METHODS7 (all six), SEEDS7 (0,1,2),
# JOBS (9 sweep processes); the trials: TRIALS, TRIAL_SEEDS, TRIAL_JOBS, TRIAL_ARGS. CIFAR-10
# comes from the JPEG copy at ../shared/datasets (or ./shared/datasets, linked there).
set -u
OUTDIR=${1:?usage: benchmarks/gpu_check.sh OUTDIR [BUDGET_SECONDS]}
BUDGET=${2:-540}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS7=${EPOCHS7:-30}
FAST_SEEDS=${FAST_SEEDS:-0,1,2}
JOBS=${JOBS:-9}
METHODS7=${METHODS7:-etf_dr,ce,la,bs,focal,ldam_drw}
SEEDS7=${SEEDS7:-0,1,2}
START=$(date +%s)
W=$OUTDIR/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
source "$(dirname "$0")/gpu_lib.sh"
trap pack_results EXIT

link_shared

env_and_data

TAIL=12 stage throughput 120 "$PY" benchmarks/throughput.py --device "$DEVICE" --batches 96 --repeats 3

TAIL=8 stage fast 170 "$PY" benchmarks/time_to_accuracy.py --device "$DEVICE" --seeds "$FAST_SEEDS" \
  --threads 4 --progress none --out "$W/fast"

TAIL=20 stage cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py \
  tests/test_fastpath.py

stage official 40 "$PY" -m ncollapse train --config cifar10_lt_r100_etf_dr --device "$DEVICE" \
  --set run.progress=none --set eval.every=10 --out "$W/official" --name etf_dr_200
"$PY" - "$W/official" <<'EOF'
import json, statistics, sys, pathlib
for m in pathlib.Path(sys.argv[1]).glob("*/metrics.jsonl"):
    secs = [json.loads(line)["seconds"] for line in m.open() if '"kind": "train"' in line]
    if len(secs) > 2:
        per = statistics.median(secs[1:])
        print(f"official recipe on {m.parent.name}: {len(secs)} epochs, median {per:.2f} s/epoch "
              f"(first {secs[0]:.1f} s) -> 200 epochs of training ~ {200 * per:.0f} s")
EOF

# the baselines on their own recipes, side by side with ETF + DR and CE (sweep processes
# claiming cells), and validation-only trials of the fast recipe, all sharing the GPU
SWEEP=("$PY" -m ncollapse sweep --recipe cifar10_lt --methods "$METHODS7"
  --ratio 100 --seeds "$SEEDS7" --epochs "$EPOCHS7" --device "$DEVICE" --set data.val=unused
  --set 'eval.splits=[val,test]' --set eval.every=3 --set eval.collapse_every=0
  --set run.threads=1 --set run.progress=none --out "$W/row7")
limit7=$(($(left) - 30))
if ((limit7 < 30)); then echo "== row7 and trials skipped: budget spent"; exit; fi
echo "== row7 and trials: $JOBS sweep processes, $(grep -c . <<<"$TRIALS") trials, limit ${limit7}s"
for i in $(seq "$JOBS"); do
  timeout -k 5 "$limit7" "${SWEEP[@]}" >"$W/row7-$i.log" 2>&1 &
done
# trials of the fast recipe, validation split only (the test set is not measured): NAME SETTINGS
# (opt-in: on an H200 with the nine sweep processes, six fastnet trials beside them did not finish
# in four minutes; give them a machine of their own). Example:
#   TRIALS=$'ref:\nwd1e3:optim.weight_decay=1e-3' TRIAL_SEEDS="0 1" benchmarks/gpu_check.sh out
TRIALS=${TRIALS:-}
trial() { # NAME:K=V,K=V SEED
  local name=${1%%:*} sets=${1#*:} args=()
  IFS=, read -ra kv <<<"$sets"
  for x in "${kv[@]}"; do [[ -n $x ]] && args+=(--set "$x"); done
  "$PY" -m ncollapse train --config cifar10_lt_r100_fast --device "$DEVICE" --seed "$2" \
    --set data.val=unused --set 'eval.splits=[val]' --set run.threads=1 --set run.progress=none \
    "${args[@]}" ${TRIAL_ARGS:-} --out "$W/trials" --name "$name-s$2" >"$W/trial-$name-s$2.log" 2>&1
}
export -f trial
export PY DEVICE W TRIAL_ARGS
for s in ${TRIAL_SEEDS:-0 1}; do [[ -n $TRIALS ]] && while read -r t; do echo "$t $s"; done <<<"$TRIALS"; done |
  timeout -k 5 "$limit7" xargs -P "${TRIAL_JOBS:-6}" -L 1 bash -c 'trial "$0" "$1"' &
wait
echo "== row7 and trials done at $(($(date +%s) - START))s"
[[ -d $W/trials ]] && "$PY" - "$W/trials" <<'EOF'
import json, pathlib, sys
for d in sorted(pathlib.Path(sys.argv[1]).glob("*")):
    f = d / "summary.json"
    if f.is_file():
        s = json.loads(f.read_text())
        v = s.get("val") or {}
        print(f"trial {d.name}: val {100 * v.get('acc', float('nan')):.2f} tail "
              f"{100 * (v.get('few_idx') or float('nan')):.2f} wall {s.get('wall_seconds', 0):.0f} s")
    else:
        print(f"trial {d.name}: not finished")
EOF
"${SWEEP[@]}" --collect >"$W/row7-collect.log" 2>&1
cat "$W/row7-collect.log" | head -n 40
"${SWEEP[@]}" --collect --json >"$W/row7.json" 2>&1
echo "== total $(($(date +%s) - START))s"
