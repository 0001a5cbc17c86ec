"""Conversion between unrolled and scanned variables.

Under `scan_blocks=True` a run of identical blocks named e.g. `block35_1` ... `block35_10` becomes one
module named `block35_1+...+block35_10` whose variables carry a leading block axis. The name says
which blocks it holds, so these functions need nothing but the variables (and, to stack, the target
layout).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

SEPARATOR = '+'


def unstack_blocks(variables: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned layout -> unrolled layout (the one TF-slim checkpoints use)."""
  out = {}
  for key, value in variables.items():
    if SEPARATOR in key:
      for i, name in enumerate(key.split(SEPARATOR)):
        out[name] = jax.tree_util.tree_map(lambda x, i=i: x[i], value)
    elif isinstance(value, Mapping):
      out[key] = unstack_blocks(value)
    else:
      out[key] = value
  return out


def stack_blocks(variables: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
  """Unrolled layout -> the layout of `target` (e.g. `jax.eval_shape` of a scanned model's init)."""
  out = {}
  for key, value in target.items():
    if SEPARATOR in key:
      names = key.split(SEPARATOR)
      missing = [n for n in names if n not in variables]
      if missing:
        raise KeyError(f'cannot stack {key!r}: no variables for {", ".join(missing)}')
      out[key] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[variables[n] for n in names])
    elif isinstance(value, Mapping):
      if key not in variables:
        raise KeyError(f'no variables for {key!r}')
      out[key] = stack_blocks(variables[key], value)
    else:
      out[key] = variables[key]
  return out
