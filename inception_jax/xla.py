"""XLA:CPU settings that the project's programs use by default (measured in BENCHMARKS.md).

`use_cpu_defaults()` appends them to `XLA_FLAGS` unless that already names them, or
`INCEPTION_JAX_XLA_DEFAULTS=0` is set. It must run before JAX starts its backends (its first
`jax.devices()` or computation); the flags only concern XLA:CPU and do nothing on GPUs and TPUs.
"""

from __future__ import annotations

import os

# YNNPACK for XLA:CPU's matrix products and reductions. Against no YNNPACK (batch 8, 299x299,
# float32, 2 cores): inception_resnet_v2 training 1.6 vs 1.2 img/s, inference 6.8 vs 4.1. Its
# elementwise fusions are left out: they pulled convolutions into YNNPACK subgraphs and materialised
# broadcast constants, and ran slower (1.4 and 5.3 img/s). BENCHMARKS.md has the table.
CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'dot,reduce'}


def use_cpu_defaults() -> None:
  if os.environ.get('INCEPTION_JAX_XLA_DEFAULTS', '1') == '0':
    return
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f'--{name}={value}' for name, value in CPU_FLAGS.items() if f'--{name}' not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *extra]).strip()
