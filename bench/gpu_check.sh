#!/usr/bin/env bash
# The GPU path, run on a real GPU (issue 18), in at most ~8 minutes on one H100/H200:
#   a. tests/train and tests/model with MICS_TEST_DEVICE=cuda (tests/train/conftest.py)
#   b. bf16 autocast against fp32 on the same short pre-training    (python -m bench.gpu_amp)
#   c. throughput, MFU and GPU idle share against plain timm loops   (python -m bench.gpu_throughput)
#   d. the learning bench, GPU preset, HyperKvasir dev at 10 % labels, one seed; and the ImageNet
#      Lite0 @ 224 pair (imagenet_probe, mics_no_pretrain)
# Every step runs even when one before it failed; each gets a `timeout` within the overall budget.
# Everything goes to the results folder ($1, default bench/results/gpu): one log per step,
# JSON where a step writes one, env.txt, and summary.tsv (step, status, seconds), which is printed.
#
#   bash bench/gpu_check.sh [RESULTS_DIR]
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh /tmp/gpu-dry    # CPU-only plumbing check, tiny sizes
# Environment: GPU_CHECK_SECONDS (overall budget, default 480), PYTHON (default .venv/bin/python),
# HYPERKVASIR_MANIFEST (default ../shared/data/hyperkvasir-dev/manifest.csv, else shared/data/...),
# GPU_CHECK_BENCH_ARGS (extra arguments for step d's main bench, e.g. "--pretrain-epochs 40").
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${1:-bench/results/gpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-.venv/bin/python}
dry=${GPU_CHECK_DRY_RUN:-0}
# overall budget; the dry run's CPU (2 shared cores) is slower than any GPU at the tiny sizes too
budget=${GPU_CHECK_SECONDS:-$([[ $dry == 1 ]] && echo 900 || echo 480)}
started=$SECONDS
summary=$out/summary.tsv
printf 'step\tstatus\tseconds\n' >"$summary"

# run_step NAME CAP_SECONDS RESERVE_SECONDS COMMAND...: runs COMMAND under `timeout` for at most
# CAP seconds, less if the budget left after RESERVE (kept for the steps after it) is smaller.
run_step() {
  local name=$1 cap=$2 reserve=$3 log="$out/$1.log" rc status t0=$SECONDS
  shift 3
  local left=$((budget - (SECONDS - started) - reserve))
  local limit=$((cap < left ? cap : left))
  echo "== $name (limit ${limit}s)"
  if ((limit < 5)); then
    echo "skipped: no time left in the ${budget}s budget" >"$log"
    status="SKIPPED (budget)"
  else
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      124 | 137) status="FAILED (timeout after ${limit}s)" ;;
      *) status="FAILED (rc $rc)" ;;
    esac
  fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$summary"
  grep -v '^\s*$' "$log" | tail -n "${TAIL_LINES:-4}"
  echo "-> $status"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  echo "dry run: $dry"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 2
  else
    echo "nvidia-smi: not found"
  fi
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>&1
} >"$out/env.txt"
cat "$out/env.txt"

if [[ $dry == 1 ]]; then
  # CPU: the test switch must skip every CUDA test cleanly; tests/model stays CPU-only either way
  tests=(tests/train)
  amp=(--device cpu --steps 3 --backbone test_resnet --image-size 32 --batch 4)
  throughput=(--device cpu --steps 2 --backbone test_resnet --image-size 32 --batch 4 --workers 0)
  data=$out/tiny-demo/manifest.csv
  [[ -f $data ]] || $py -m mics_core demo --out "$out/tiny-demo" --pairs 40 --size 48 >/dev/null 2>&1
  main_bench=(--preset cpu --backbone test_resnet --image-size 32 --pretrain-epochs 1 --finetune-epochs 2
    --baseline-steps 2 --methods supervised mics_no_pretrain)
  imagenet_bench=(--preset cpu --finetune-epochs 2 --methods imagenet_probe mics_no_pretrain)
  imagenet_size=32
  caps=(120 120 120 150 150) # a b c d-imagenet d-main
else
  tests=(tests/train tests/model)
  amp=(--device cuda --steps 30)
  throughput=(--device cuda --steps 20)
  data=${HYPERKVASIR_MANIFEST:-../shared/data/hyperkvasir-dev/manifest.csv}
  [[ -f $data || ! -f shared/data/hyperkvasir-dev/manifest.csv ]] || data=shared/data/hyperkvasir-dev/manifest.csv
  # shellcheck disable=SC2206  # word splitting of the extra arguments is wanted
  main_bench=(--preset gpu ${GPU_CHECK_BENCH_ARGS:-})
  imagenet_bench=(--preset gpu --methods imagenet_probe mics_no_pretrain)
  imagenet_size=224
  caps=(150 75 90 70 400)
fi

# a. the training and prediction tests on CUDA
run_step a-tests-cuda "${caps[0]}" 300 env MICS_TEST_DEVICE=cuda "$py" -m pytest "${tests[@]}" -x -q -p no:cacheprovider

# b. bf16 autocast against fp32
run_step b-amp "${caps[1]}" 240 "$py" -m bench.gpu_amp "${amp[@]}" --json "$out/amp.json"

# c. throughput, MFU, feeding
run_step c-throughput "${caps[2]}" 160 "$py" -m bench.gpu_throughput "${throughput[@]}" --json "$out/throughput.json"

# d. the learning bench (the short ImageNet pair first, the long GPU-preset run gets what is left)
if [[ -f $data ]]; then
  run_step d-bench-imagenet-lite0 "${caps[3]}" 90 env MICS_WEIGHTS=imagenet "$py" -m mics_core bench --data "$data" \
    --labeled-fraction 0.1 --seeds 1 "${imagenet_bench[@]}" --backbone tf_efficientnet_lite0 \
    --image-size "$imagenet_size" --json "$out/bench-imagenet-lite0-10.json"
  run_step d-bench-gpu-10 "${caps[4]}" 0 "$py" -m mics_core bench --data "$data" --labeled-fraction 0.1 --seeds 1 \
    "${main_bench[@]}" --json "$out/bench-gpu-10.json"
else
  echo "manifest $data not found" | tee "$out/d-bench.log"
  printf 'd-bench\tFAILED (no manifest %s)\t0\n' "$data" >>"$summary"
fi

echo "== summary ($((SECONDS - started))s of ${budget}s; results in $out)"
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
! grep -q FAILED "$summary"
