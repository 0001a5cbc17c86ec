"""Runs of identical blocks, unrolled or under `nn.scan`, and conversion between the two layouts.

Under `scan_blocks=True` a run of identical blocks named e.g. `block35_1` ... `block35_10` becomes
one module named `block35_1+...+block35_10` whose variables carry a leading block axis. The name
says which blocks it holds, so the conversions need nothing but the variables (and, to stack, the
target layout).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models import diagnostics
from inception_jax.models.layers import Mixed

SEPARATOR = '+'


def repeat(block: type[Mixed], names: Sequence[str], x: jax.Array, train: bool, *, scan: bool,
           remat: bool, **fields) -> jax.Array:
  """Applies `len(names)` identical blocks, created in the calling module's scope.

  Unrolled, block i is named `names[i]`. With `scan`, the blocks run under `nn.scan` as one module
  named `SEPARATOR.join(names)` whose variables are stacked on a leading axis (see `stack_blocks`):
  the same function, compiled once instead of once per block.
  """
  if scan and len(names) > 1:
    cls = nn.remat(block, static_argnums=(2,), methods=['step']) if remat else block
    axes = {'params': 0, 'batch_stats': 0, diagnostics.COLLECTION: 0}
    scanned = nn.scan(cls, variable_axes=axes,
                      split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
                      length=len(names), methods=['step'])
    x, _ = scanned(name=SEPARATOR.join(names), **fields).step(x, train)
    return x
  cls = nn.remat(block, static_argnums=(2,)) if remat else block
  for name in names:
    x = cls(name=name, **fields)(x, train)
  return x


class Stage(nn.Module):
  """A scope around a run of identical blocks, like TF-slim's `slim.repeat` scopes (`Repeat`)."""
  block: type[Mixed]
  names: tuple[str, ...]
  scan: bool
  remat: bool
  fields: tuple[tuple[str, Any], ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return repeat(self.block, self.names, x, train, scan=self.scan, remat=self.remat,
                  **dict(self.fields))


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
