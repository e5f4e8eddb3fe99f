# Shared by the GPU scripts (benchmarks/gpu_check.sh, benchmarks/gpu_launch_free.sh): a time
# budget, stages that each run under their own limit and log to $W/NAME.log, and the logs and
# run directories (no checkpoints) packed into $OUTDIR/results.tar.gz on exit. Sourced after
# OUTDIR, BUDGET, START and W are set.
left() { echo $((BUDGET - ($(date +%s) - START))); }
stage() { # name limit command...: runs it under a limit, logs to $W/name.log, shows the tail
  local name=$1 limit=$2 t0 rc
  shift 2
  if [[ " ${SKIP:-} " == *" $name "* ]]; then echo "== $name skipped (SKIP)"; return; fi
  ((limit > $(left) - 25)) && limit=$(($(left) - 25))
  if ((limit < 5)); then echo "== $name skipped: budget spent"; return; fi
  echo "== $name (limit ${limit}s, $(left)s of the budget left)"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$W/$name.log" 2>&1
  rc=$?
  echo "== $name rc=$rc in $(($(date +%s) - t0))s"
  tail -n "${TAIL:-15}" "$W/$name.log"
}
pack_results() {
  tar -czf "$OUTDIR/results.tar.gz" -C "$W" --exclude='*.pt' --exclude='*.npz' --exclude=partial . 2>/dev/null
  ls -la "$OUTDIR/results.tar.gz"
}
# CIFAR-10's JPEG copy: ../shared/datasets, or a shared/datasets folder in the checkout (the one
# that travels to a device machine), linked there
link_shared() {
  if [[ ! -e ../shared/datasets && -d shared/datasets ]]; then ln -sfn "$PWD/shared" ../shared; fi
}
# the machine (GPU, driver, CPU, versions), then CIFAR-10-LT decoded and cached once
env_and_data() {
stage env 30 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  lscpu | grep -E 'Model name|^CPU\(s\)'; $PY -c 'import torch, numpy, scipy, sklearn, yaml, filelock, threadpoolctl, matplotlib
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"gpu\", torch.cuda.is_available() and torch.cuda.get_device_name(), \"bf16\", torch.cuda.is_available() and torch.cuda.is_bf16_supported())'"

stage data 90 "$PY" -c "
import time
from ncollapse.composition import compose
from ncollapse.data import load_data
t = time.perf_counter()
b = load_data(compose('cifar10_lt_r100_etf_dr', overrides=['data.val=unused']).data)
print('decoded and cached in', round(time.perf_counter() - t, 1), 's;', b.info.get('source'), b.class_counts)
t = time.perf_counter(); load_data(compose('cifar10_lt_r100_etf_dr').data)
print('cached load', round(time.perf_counter() - t, 1), 's')"
}
