"""Diagnostics of a dying network (the paper's Section 3.3), taken from a forward pass's own values.

The paper saw Inception-ResNets with more than about 1000 filters "die" early in training: "the
last layer before the average pooling started to produce only zeros". Two measurements show the
symptom and its cause as training goes:

- `dead_fraction`: the fraction of exactly-zero activations entering the average pool, and
  `dead_channels`: the fraction of its channels that are zero for every position of the batch;
- `residual_ratio_<grid>`: per residual block, RMS(scale * residual branch) / RMS(block input),
  how much each block changes its input, averaged over the blocks of the 35x35, 17x17 and 8x8 grids.

Modules record them with Flax's `sow` into the `diagnostics` collection, only when an `apply` makes
that collection mutable (the training step does, when asked); otherwise nothing is computed. Each
value is a scalar over the whole (global) batch, outside the gradient.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = 'diagnostics'
PRE_POOL = ('dead_fraction', 'dead_channels')
GRIDS = ('35x35', '17x17', '8x8')
RESIDUAL = tuple(f'residual_ratio_{grid}' for grid in GRIDS)
# The smallest input RMS a residual ratio divides by: a block whose input is all zero (behind a dead
# block) records a large finite ratio, not inf, so that sums over many steps stay finite.
INPUT_FLOOR = 1e-6


def wanted(module: nn.Module) -> bool:
  """Whether this `apply` records diagnostics (never `init`, which makes every collection
  mutable)."""
  return module.is_mutable_collection(COLLECTION) and not module.is_initializing()


def record_pre_pool(module: nn.Module, x: jax.Array) -> None:
  """Records `dead_fraction` and `dead_channels` of the feature map `x` [batch, h, w, c] that
  enters the average pool."""
  if not wanted(module):
    return
  zero = jax.lax.stop_gradient(x) == 0
  module.sow(COLLECTION, 'dead_fraction', jnp.mean(zero, dtype=jnp.float32))
  module.sow(COLLECTION, 'dead_channels',
             jnp.mean(jnp.all(zero, axis=(0, 1, 2)), dtype=jnp.float32))


def rms(x: jax.Array) -> jax.Array:
  x = jax.lax.stop_gradient(x).astype(jnp.float32)
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def record_residual(module: nn.Module, grid: str, x: jax.Array, branch: jax.Array) -> None:
  """Records RMS(branch) / RMS(x) for a residual block of `grid` whose input is `x` and whose
  scaled residual branch is `branch`."""
  if not wanted(module):
    return
  module.sow(COLLECTION, f'residual_ratio_{grid}', rms(branch) / jnp.maximum(rms(x), INPUT_FLOOR))


def summarize(collection: Any) -> dict[str, jax.Array]:
  """{name: mean} of a `diagnostics` collection: every value recorded under a name, from every
  module (blocks under `nn.scan` record one per block, stacked), weighs the same."""
  values = defaultdict(list)
  for path, leaf in jax.tree_util.tree_flatten_with_path(collection)[0]:
    # sow keeps a tuple under the name: the path ends in (name, index).
    name = next(p.key for p in reversed(path) if isinstance(p, jax.tree_util.DictKey))
    values[name].append(jnp.ravel(leaf))
  return {name: jnp.mean(jnp.concatenate(v)) for name, v in values.items()}
