#!/usr/bin/env bash
# The equal-compute comparison of the model card: one run per setting, each from scratch on
# train/configs/compare.yaml with one change, each stopped at the same CPU budget, then the
# learning curves and their table:
#   bash evaluation/compare.sh [OUT [CPU_HOURS]]    # defaults: runs/compare, 0.1 CPU-hour per run
# Runs one after another (one thread each). A run that already reached the budget is skipped;
# one that stopped short of it (interrupted, or a smaller budget before) resumes from its last
# checkpoint, so a later session extends every curve by running this again with a larger budget.
set -euo pipefail
out="${1:-runs/compare}"
budget="${2:-0.1}"
run() {  # NAME VAL_EVERY [OPTIONS...]
  local name="$1" every="$2"; shift 2
  if [ -f "$out/$name/final.json" ] && python -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['cpu_s'] < 3600 * float(sys.argv[2]))" "$out/$name/final.json" "$budget"; then
    echo "$name: done"; return
  fi
  python -m train --config-file train/configs/compare.yaml --out "$out/$name" --val-every "$every" \
    --max-cpu-hours "$budget" --resume "$@" >> "$out/$name.log" 2>&1 || { echo "$name: failed, see $out/$name.log"; return 1; }
  echo "$name: $(python -c "import json,sys; f=json.load(open(sys.argv[1])); print(f['step'], 'steps', round(f['cpu_s']), 'CPU-s')" "$out/$name/final.json")"
}
mkdir -p "$out"
run base 120
run lam0.5 120 --lam 0.5
run l2 130 --objective regression
run global_local 120 --network global_local
run width0.5 50 --width 0.5
run crop64 250 --crop 64
run lam0.25 120 --lam 0.25
run q261 110 --grid 10
run width0.5-crop64 110 --width 0.5 --crop 64
# Champati et al.'s colour spaces and losses: regression in YUV (uv) and RGB beside Lab (l2 above),
# classification over ab bins (base); their rebalancing lambda 0.2 (Q 77 here, 81 in theirs)
run yuv 130 --objective regression --color-space yuv
run rgb 130 --objective regression --color-space rgb
run lam0.2 120 --lam 0.2
# ... and their classification over uv bins (Q 81 at grid 20, U and V scaled as colorizer.bins.UV_SCALE)
run uvbins 120 --color-space yuv
python -m evaluation.curves "$out"/*/ --base "$out/base" --out "$out/curves.png" --table "$out/curves.md"
# what the curves are drawn from (a few kB a run, no weights), kept so they can be redrawn and extended
for run in "$out"/*/; do
  mkdir -p "docs/compare/$(basename "$run")"
  cp "$run"/{config.json,val.csv,val_baseline.json,final.json} "docs/compare/$(basename "$run")/"
done
cp "$out/curves.png" "$out/curves.md" docs/compare/
