#!/usr/bin/env bash
# The GPU benchmark: training step and inference of inception_v4 and inception_resnet_v2 in
# bfloat16 at batch 128, 299x299, each beside timm in the same process; writes a Markdown table.
# Our blocks are unrolled, as the ImageNet configs run them (faster on GPUs: BENCHMARKS.md).
# Each run is capped at 150 s.
#
#   bash benchmarks/gpu.sh [OUTPUT_DIR]          (default benchmarks/results)
#
# Needs jax with CUDA, flax, optax, ml_collections, torch and timm. PYTHON picks the interpreter;
# EXTRA_ARGS are appended to every benchmark's flags (a dry run: EXTRA_ARGS="--batch=2 --runs=1").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
py=${PYTHON:-python3}
mkdir -p "$out"
: > "$out/gpu.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$out/gpu.log"
for model in inception_resnet_v2 inception_v4; do
  for bench in train_step inference; do
    echo "== $bench $model" | tee -a "$out/gpu.log"
    timeout 150 "$py" benchmarks/$bench.py --model=$model --batch=128 --dtype=bfloat16 \
        --unrolled --compare_timm --runs=5 --iters=10 --json ${EXTRA_ARGS:-} 2>&1 \
      | grep -v '^W0000\|^I0000' | tee -a "$out/gpu.log"
  done
done
grep '^{' "$out/gpu.log" > "$out/gpu.jsonl"
"$py" benchmarks/table.py "$out/gpu.jsonl" | tee "$out/gpu.md"
