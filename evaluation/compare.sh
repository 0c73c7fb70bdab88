#!/usr/bin/env bash
# The equal-compute comparison of the model card: one run per setting, each from scratch on
# train/configs/compare.yaml with one change, each stopped at the same CPU budget, then the
# learning curves and their table:
#   bash evaluation/compare.sh [OUT [CPU_HOURS]] [--jobs N] [--val-scale X] [--runs A,B,...] [--keep DIR]
#                              [--dry-run] [TRAIN_OPTIONS...]
#   defaults: runs/compare, 0.1 CPU-hour per run, one run at a time, each run's own validation
#   interval, every run below (--runs: only those named); --dry-run prints each stream's commands.
#   --keep DIR copies what the curves are drawn from (each finished run's config.json, val.csv,
#   val_baseline.json, final.json; no weights) and the curves into DIR (the model card's: docs/compare)
# Each run trains on one thread; --jobs 2 runs two at a time (one per core: the budget is CPU time, so
# the runs stay comparable). --val-scale multiplies every run's validation interval (in steps; the
# intervals below give 3-5 validations at 0.1 CPU-hour in fp32): scale it with the budget and the
# precision. TRAIN_OPTIONS go to every run, e.g. --mixed-precision auto for bf16 on a CPU that has it
# (compare.yaml is fp32; never mix precisions within one OUT).
# A run that already reached the budget is skipped; one that stopped short of it (interrupted, or a
# smaller budget before) resumes from its last checkpoint, so a later session extends every curve by
# running this again with a larger budget.
set -euo pipefail
out="runs/compare" budget="0.1" jobs=1 scale=1 only="" keep="" dry="" extra=()
fail() { echo "compare.sh: $*" >&2; exit 2; }
need_value() { { [ $# -ge 2 ] && [[ "$2" != --* ]]; } || fail "$1 needs a value"; }  # OPTION [VALUE...]
number='^([0-9]+[.]?[0-9]*|[.][0-9]+)$'
[ $# -gt 0 ] && [[ "$1" != --* ]] && { out="$1"; shift; }
[ $# -gt 0 ] && [[ "$1" != --* ]] && { budget="$1"; shift; }
[[ "$budget" =~ $number ]] || fail "CPU_HOURS must be a number of hours, not '$budget'"
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) need_value "$@"
      [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail "--jobs must be a whole number of at least 1, not '$2'"
      jobs="$2"; shift 2 ;;
    --val-scale) need_value "$@"
      [[ "$2" =~ $number ]] && [[ "$2" =~ [1-9] ]] || fail "--val-scale must be a positive number, not '$2'"
      scale="$2"; shift 2 ;;
    --runs) need_value "$@"
      [[ "$2" =~ ^[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*$ ]] || fail "--runs takes names separated by commas, not '$2'"
      only=",$2,"; shift 2 ;;
    --keep) need_value "$@"; keep="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
run() {  # NAME VAL_EVERY [OPTIONS...]
  local name="$1" every cmd
  every=$(python -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$2" "$scale")
  shift 2
  cmd=(python -m train --config-file train/configs/compare.yaml --out "$out/$name" --val-every "$every"
       --max-cpu-hours "$budget" --resume "$@" ${extra[@]+"${extra[@]}"})
  [ -z "$dry" ] || { echo "stream $stream_index: ${cmd[*]}"; return; }
  if [ -f "$out/$name/final.json" ] && python -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['cpu_s'] < 3600 * float(sys.argv[2]))" "$out/$name/final.json" "$budget"; then
    echo "$name: done"; return
  fi
  "${cmd[@]}" >> "$out/$name.log" 2>&1 || { echo "$name: failed, see $out/$name.log"; return 1; }
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
    [[ "$names" == *" $name "* ]] || fail "--runs: no run named '$name' (runs:${names% })"
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
finished=()  # every finished run in OUT (those of earlier calls too), the curves' runs
for run in "$out"/*/; do [ -f "$run/final.json" ] && [ -f "$run/val.csv" ] && finished+=("${run%/}"); done
[ ${#finished[@]} -gt 0 ] || fail "no finished run in $out"
base="$out/base"; [ -f "$base/val.csv" ] || base="${finished[0]}"
python -m evaluation.curves "${finished[@]}" --base "$base" --out "$out/curves.png" --table "$out/curves.md"
[ -n "$keep" ] || exit 0
# what the curves are drawn from (a few kB a run, no weights), kept so they can be redrawn and extended
for run in "${finished[@]}"; do
  mkdir -p "$keep/$(basename "$run")"
  cp "$run"/{config.json,val.csv,val_baseline.json,final.json} "$keep/$(basename "$run")/"
done
cp "$out/curves.png" "$out/curves.md" "$keep/"
