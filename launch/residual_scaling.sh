#!/usr/bin/env bash
# The residual-scaling study (README "Residual scaling"): trains configs/residual_scaling.py at each
# scale and seed, one run after another on this machine, then draws every run into one figure.
#
#   launch/residual_scaling.sh OUTDIR [--config.FIELD=VALUE ...]
#
# Runs go to OUTDIR/scale_<SCALE>_seed_<SEED>; the figure to OUTDIR/residual_scaling.png. The
# environment picks the runs: SCALES (default "1.0 0.3 0.1 learned") and SEEDS (default "0 1").
# Interrupted? Rerun the same command: finished runs are only re-evaluated, the others resume.
set -euo pipefail
if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  sed -n '2,9p' "$0"; exit 2
fi
out=$1
shift
workdirs=() labels=()
for scale in ${SCALES:-1.0 0.3 0.1 learned}; do
  for seed in ${SEEDS:-0 1}; do
    workdir="$out/scale_${scale}_seed_${seed}"
    echo "== scale $scale, seed $seed: $workdir"
    python -m inception_jax.main --config="configs/residual_scaling.py:$scale" \
      --workdir="$workdir" --config.seed="$seed" "$@"
    workdirs+=("$workdir")
    labels+=("scale $scale seed $seed")
  done
done
python -m inception_jax.plot "${workdirs[@]}" --labels="$(IFS=,; echo "${labels[*]}")" \
  --metrics=eval_top1,loss,dead_fraction,dead_channels,residual_ratio_17x17,residual_ratio_8x8 \
  --output="$out/residual_scaling.png"
