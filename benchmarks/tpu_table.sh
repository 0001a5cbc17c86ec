#!/usr/bin/env bash
# The TPU table of BENCHMARKS.md: for each model and slice, the largest per-chip batch whose train
# step fits and the roofline estimate at that batch (python -m inception_jax.aot --find_max_batch),
# in bfloat16 at the configs' other settings. Compiles only: needs pip install -e ".[tpu]", no TPU.
#
#   benchmarks/tpu_table.sh OUTDIR        (MODELS="irv2 iv4", SLICES="v5e-16 v5p-64", STEP=32)
#
# Each search starts from 128 images per chip on v5e, 640 on v5p, 256 on v6e and v4, and writes
# OUTDIR/<model>_<slice>.json; then the table is printed (benchmarks/table.py). On 2 CPU cores a
# full network takes 10-15 minutes per compile that fits, about a minute for one that does not.
set -uo pipefail
if [ $# -ne 1 ]; then
  sed -n '2,10p' "$0"; exit 2
fi
out=$(mkdir -p "$1" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
declare -A start=([v5e]=128 [v5p]=640 [v6e]=256 [v4]=256)
for model in ${MODELS:-irv2 iv4}; do
  for slice in ${SLICES:-v5e-16 v5p-64}; do
    chips=$(python -c "from inception_jax import aot; print(aot.SLICES['$slice'].chips)") || exit 2
    per_chip=${start[${slice%%-*}]}
    echo "$model on $slice from $per_chip per chip ($(date +%T))" >&2
    python -m inception_jax.aot --config="configs/$model.py" --topology="$slice" \
      --config.model.dtype=bfloat16 --config.batch_size=$((per_chip * chips)) \
      --find_max_batch --batch_step="${STEP:-32}" --json > "$out/${model}_$slice.json"
  done
done
cat "$out"/*.json | python benchmarks/table.py
