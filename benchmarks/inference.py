"""Inference throughput (eval-mode forward pass): compile time, images/s, peak memory, FLOPs and
MFU, optionally beside timm (PyTorch, `torch.inference_mode`) timed in the same process.

    python benchmarks/inference.py --model=inception_v4 --batch=8 --image_size=299 \
        [--dtype=bfloat16] [--compare_timm] [--json]

See benchmarks/harness.py for how timing, memory and MFU are measured.
"""

import harness

if __name__ == '__main__':
  harness.main(__doc__, train=False)
