#!/usr/bin/env bash
# The residual-scaling study (README "Residual scaling"): trains configs/residual_scaling.py at each
# scale and seed, one run after another on this machine, then draws every run into one figure.
#
#   launch/residual_scaling.sh OUTDIR [--config.FIELD=VALUE ...]
#
# Runs go to OUTDIR/scale_<SCALE>_seed_<SEED>; the figure to OUTDIR/residual_scaling.png. The
# environment picks the runs: SCALES (default "1.0 0.3 0.1 learned") and SEEDS (default "0 1").
# A run that fails (a non-finite loss, say) does not stop the others; the script then exits 1.
# Interrupted? Rerun the same command: finished runs are only re-evaluated, the others resume.
set -uo pipefail
if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  sed -n '2,10p' "$0"; exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."  # the repository root: the config's path is relative to it
workdirs=() labels=() failed=()
for scale in ${SCALES:-1.0 0.3 0.1 learned}; do
  for seed in ${SEEDS:-0 1}; do
    workdir="$out/scale_${scale}_seed_${seed}"
    echo "== scale $scale, seed $seed: $workdir"
    if ! python -m inception_jax.main --config="configs/residual_scaling.py:$scale" \
        --workdir="$workdir" --config.seed="$seed" "$@"; then
      failed+=("scale $scale seed $seed")
    fi
    if [ -s "$workdir/metrics.jsonl" ]; then
      workdirs+=("$workdir")
      labels+=("scale $scale seed $seed")
    fi
  done
done
status=0
if [ ${#workdirs[@]} -gt 0 ]; then
  python -m inception_jax.plot "${workdirs[@]}" --labels="$(IFS=,; echo "${labels[*]}")" \
    --metrics=eval_top1,loss,dead_fraction,dead_channels,residual_ratio_17x17,residual_ratio_8x8 \
    --output="$out/residual_scaling.png" || status=1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "Failed: $(IFS=,; echo "${failed[*]}") (see their output above; rerun to resume)." >&2
  status=1
fi
exit "$status"
