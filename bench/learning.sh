#!/usr/bin/env bash
# The learning benchmark of the README: demo data at 5 % and 10 % labels, the real
# HyperKvasir subset at 10 % and 20 %. Writes bench/results/<name>.{json,md}.
#   bash bench/learning.sh [SEEDS] [BUDGET_MINUTES]
# Without a budget every baseline runs its full step count, so a run is reproducible on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
budget=${2:+--budget-minutes $2}
py=.venv/bin/python
out=bench/results
mkdir -p "$out" data/bench-cache
[ -f data/demo/manifest.csv ] || $py -m mics_core demo --out data/demo --pairs 600
hyper=../shared/data/hyperkvasir-dev/manifest.csv
runs=()
[ -f "$hyper" ] && runs+=("hyperkvasir-10 $hyper 0.10" "hyperkvasir-20 $hyper 0.20")
runs+=("demo-05 data/demo/manifest.csv 0.05" "demo-10 data/demo/manifest.csv 0.10")
for run in "${runs[@]}"; do
  read -r name manifest fraction <<<"$run"
  echo "== $name"
  $py -m mics_core bench --data "$manifest" --labeled-fraction "$fraction" --seeds "$seeds" \
    $budget --cache data/bench-cache --json "$out/$name.json" | tee "$out/$name.log"
  sed -n '/^| method/,$p' "$out/$name.log" > "$out/$name.md"
done
