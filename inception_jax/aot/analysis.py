"""What XLA says of a compiled program: its memory and costs per device, the bytes of abstract
arrays, and its refusal of a program larger than HBM (how much was needed and available)."""

from __future__ import annotations

import math
import re
from typing import Any, Optional


def memory(compiled) -> Optional[dict[str, int]]:
  """XLA's memory account of a compiled program, per device (None where the backend gives none):
  `total_bytes` = arguments + outputs - outputs in donated arguments' buffers + temporaries +
  code."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  fields = {'argument_bytes': m.argument_size_in_bytes, 'output_bytes': m.output_size_in_bytes,
            'alias_bytes': m.alias_size_in_bytes, 'temp_bytes': m.temp_size_in_bytes,
            'code_bytes': m.generated_code_size_in_bytes}
  fields = {k: int(v) for k, v in fields.items()}
  fields['total_bytes'] = (fields['argument_bytes'] + fields['output_bytes']
                           - fields['alias_bytes'] + fields['temp_bytes'] + fields['code_bytes'])
  return fields


def costs(compiled) -> dict[str, Optional[float]]:
  """XLA's cost analysis of a compiled program, per device: flops, bytes_accessed and the cost
  model's optimal_seconds (None where absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  get = lambda key: float(analysis[key]) if key in analysis else None
  return {'flops': get('flops'), 'bytes_accessed': get('bytes accessed'),
          'optimal_seconds': get('optimal_seconds')}


def nbytes(tree) -> int:
  """The bytes of a tree of (abstract) arrays."""
  import jax  # deferred: JAX starts only after prepare_environment
  return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(tree))


# XLA:TPU's refusals of a program larger than HBM (not of one that overflows on-chip memory such as
# VMEM, which no batch size fixes), as (required, available): "Ran out of memory on HBM, the total
# memory required for HLO temporaries (18.43G) exceeds available HBM (15.75G)." and "Ran out of
# memory in memory space hbm. Used 21.95G of 15.48G hbm."
OUT_OF_MEMORY = re.compile(r'(out of memory|exceeds available|exceeded).{0,40}\b(hbm|HBM)\b',
                           re.IGNORECASE)
_AMOUNTS = (re.compile(r'\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)'),
            re.compile(r'Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm'))


def _xla_bytes(value: str, unit: str) -> float:
  return float(value) * 1024 ** 'KMGT'.index(unit) * 1024


def refusal(message: str) -> dict[str, Any]:
  """What a compile error's message says of memory: `out_of_memory` (XLA refused a program
  larger than HBM) and, where the message has them, `required_bytes`, `available_bytes` and
  `spare_bytes` (negative)."""
  found: dict[str, Any] = {'out_of_memory': bool(OUT_OF_MEMORY.search(message))}
  needed = next((m for m in (p.search(message) for p in _AMOUNTS) if m), None)
  if needed:
    found['required_bytes'] = _xla_bytes(*needed.group(1, 2))
    found['available_bytes'] = _xla_bytes(*needed.group(3, 4))
    found['spare_bytes'] = found['available_bytes'] - found['required_bytes']
  return found
