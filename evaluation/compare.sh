#!/usr/bin/env bash
# The equal-compute comparison of the model card: one run per setting, each from scratch on
# train/configs/compare.yaml with one change, each stopped at the same CPU budget, then the
# learning curves and their table:
#   bash evaluation/compare.sh [OUT [CPU_HOURS]] [--jobs N] [--val-scale X] [--runs A,B,...] [--dry-run] [TRAIN_OPTIONS...]
#   defaults: runs/compare, 0.1 CPU-hour per run, one run at a time, each run's own validation
#   interval, every run below (--runs: only those named); --dry-run prints each stream's commands
# Each run trains on one thread; --jobs 2 runs two at a time (one per core: the budget is CPU time, so
# the runs stay comparable). --val-scale multiplies every run's validation interval (in steps; the
# intervals below give 3-5 validations at 0.1 CPU-hour in fp32): scale it with the budget and the
# precision. TRAIN_OPTIONS go to every run, e.g. --mixed-precision auto for bf16 on a CPU that has it
# (compare.yaml is fp32; never mix precisions within one OUT).
# A run that already reached the budget is skipped; one that stopped short of it (interrupted, or a
# smaller budget before) resumes from its last checkpoint, so a later session extends every curve by
# running this again with a larger budget.
set -euo pipefail
out="runs/compare" budget="0.1" jobs=1 scale=1 only="" dry="" extra=()
[ $# -gt 0 ] && [[ "$1" != --* ]] && { out="$1"; shift; }
[ $# -gt 0 ] && [[ "$1" != --* ]] && { budget="$1"; shift; }
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --val-scale) scale="$2"; shift 2 ;;
    --runs) only=",$2,"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
run() {  # NAME VAL_EVERY [OPTIONS...]
  local name="$1" every
  every=$(python -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$2" "$scale")
  shift 2
  if [ -n "$dry" ]; then
    echo "stream $stream_index:" python -m train --config-file train/configs/compare.yaml --out "$out/$name" \
      --val-every "$every" --max-cpu-hours "$budget" --resume "$@" ${extra[@]+"${extra[@]}"}
    return
  fi
  if [ -f "$out/$name/final.json" ] && python -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['cpu_s'] < 3600 * float(sys.argv[2]))" "$out/$name/final.json" "$budget"; then
    echo "$name: done"; return
  fi
  python -m train --config-file train/configs/compare.yaml --out "$out/$name" --val-every "$every" \
    --max-cpu-hours "$budget" --resume "$@" ${extra[@]+"${extra[@]}"} >> "$out/$name.log" 2>&1 \
    || { echo "$name: failed, see $out/$name.log"; return 1; }
  echo "$name: $(python -c "import json,sys; f=json.load(open(sys.argv[1])); print(f['step'], 'steps', round(f['cpu_s']), 'CPU-s')" "$out/$name/final.json")"
}
runs=(  # NAME VAL_EVERY [OPTIONS...], one run a line
  "base 120"
  "lam0.5 120 --lam 0.5"
  "l2 130 --objective regression"
  "global_local 120 --network global_local"
  "width0.5 50 --width 0.5"
  "crop64 250 --crop 64"
  "lam0.25 120 --lam 0.25"
  "q261 110 --grid 10"
  "width0.5-crop64 110 --width 0.5 --crop 64"
  # the base again with another seed (initial weights, crops, order): how far two runs of one setting differ
  "base-seed1 120 --seed 1"
  # Champati et al.'s colour spaces and losses: regression in YUV (uv) and RGB beside Lab (l2 above),
  # classification over ab bins (base); their rebalancing lambda 0.2 (Q 77 here, 81 in theirs)
  "yuv 130 --objective regression --color-space yuv"
  "rgb 130 --objective regression --color-space rgb"
  "lam0.2 120 --lam 0.2"
  # ... and their classification over uv bins (Q 81 at grid 20, U and V scaled as colorizer.bins.UV_SCALE)
  "uvbins 120 --color-space yuv"
)
if [ -n "$only" ]; then  # keep the named runs, in the order above
  names=" ${runs[*]%% *} "
  IFS=, read -ra wanted <<< "${only:1:${#only}-2}"
  for name in "${wanted[@]}"; do
    [[ "$names" == *" $name "* ]] || { echo "compare.sh: --runs: no run named '$name' (runs:${names% })" >&2; exit 2; }
  done
  kept=()
  for line in "${runs[@]}"; do [[ "$only" == *",${line%% *},"* ]] && kept+=("$line"); done
  runs=("${kept[@]}")
fi
[ -n "$dry" ] || mkdir -p "$out"
stream() {  # the runs whose index is I modulo jobs, one after another
  local i status=0 stream_index="$1"
  for ((i = $1; i < ${#runs[@]}; i += jobs)); do
    # shellcheck disable=SC2086  # a line of runs is words
    run ${runs[$i]} || status=1
  done
  return $status
}
pids=()
for ((s = 0; s < jobs; s++)); do stream "$s" & pids+=($!); done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || exit 1
[ -z "$dry" ] || exit 0
python -m evaluation.curves "$out"/*/ --base "$out/base" --out "$out/curves.png" --table "$out/curves.md"
# what the curves are drawn from (a few kB a run, no weights), kept so they can be redrawn and extended
for run in "$out"/*/; do
  mkdir -p "docs/compare/$(basename "$run")"
  cp "$run"/{config.json,val.csv,val_baseline.json,final.json} "docs/compare/$(basename "$run")/"
done
cp "$out/curves.png" "$out/curves.md" docs/compare/
