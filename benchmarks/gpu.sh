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
#
# SPEED=1 runs issue 18's variants of the Inception-ResNet-v2 training step instead, one after
# another, each alone in its own process and capped (a timeout still leaves the figures printed so
# far), and appends their JSON lines to OUTPUT_DIR/speed.jsonl:
#
#   SPEED=1 bash benchmarks/gpu.sh OUT                         all variants (about 13 minutes)
#   SPEED=1 VARIANTS="timm cmdbuf" bash benchmarks/gpu.sh OUT  some (timm: about 6 minutes)
#
# Variants (bf16, batch 128, 299x299, unrolled, 3 runs of 10 steps, unless named):
#   timm       ours and timm under torch.compile in the same process, taking turns (~220 s compile)
#   base       ours alone, the reference for the rest
#   cmdbuf     XLA command buffers (CUDA graphs) for fusions, cuBLAS, cuDNN and custom calls
#   lhs        XLA's latency-hiding scheduler
#   autotune4  XLA's autotuning level 4 (more candidate kernels)
#   cudnn      cuDNN GEMM fusion level 2
#   folded     BatchNorm as one multiply-add per element (config.model.bn_folded)
#   b256 b384  larger batches
#   iv4_timm   Inception-v4 beside timm under torch.compile
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
py=${PYTHON:-python3}
mkdir -p "$out"
if [ -n "${SPEED:-}" ]; then
  : >> "$out/speed.jsonl"
  for name in ${VARIANTS:-timm base cmdbuf lhs folded b256 autotune4 cudnn b384 iv4_timm}; do
    flags="" args="" model=inception_resnet_v2 cap=130
    case $name in
      timm) args="--compare_timm --timm_compile" cap=420 ;;
      base) ;;
      cmdbuf) flags="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUDNN,CUSTOM_CALL --xla_gpu_graph_min_graph_size=1" ;;
      lhs) flags="--xla_gpu_enable_latency_hiding_scheduler=true" ;;
      autotune4) flags="--xla_gpu_autotune_level=4" cap=180 ;;
      cudnn) flags="--xla_gpu_cudnn_gemm_fusion_level=2" ;;
      folded) args="--bn_folded" ;;
      b256) args="--batch=256" cap=160 ;;
      b384) args="--batch=384" cap=190 ;;
      iv4_timm) model=inception_v4 args="--compare_timm --timm_compile" cap=400 ;;
      *) echo "error: unknown variant $name (see the top of $0)" >&2; exit 2 ;;
    esac
    echo "== $name: $model ${flags:+XLA_FLAGS=$flags }$args (at most $cap s)"
    XLA_FLAGS="${XLA_FLAGS:-} $flags" PYTHONUNBUFFERED=1 timeout "$cap" "$py" \
        benchmarks/train_step.py --model=$model --batch=128 --dtype=bfloat16 --unrolled \
        --runs=3 --iters=10 --json $args ${EXTRA_ARGS:-} 2>&1 | grep -v '^W0000\|^I0000' \
      | while IFS= read -r line; do
          echo "$line"
          case $line in '{'*) echo "${line%\}}, \"variant\": \"$name\"}" >> "$out/speed.jsonl" ;; esac
        done
  done
  exit 0
fi
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
