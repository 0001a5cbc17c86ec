"""Fine-tuning with frozen parts: which variables `config.trainable_scopes` leaves to train.

`config.trainable_scopes` holds TF-slim scope patterns, comma-separated (`Logits,AuxLogits`,
`Mixed_7*,Conv2d_7b_1x1,Logits`); None trains everything. The matching rule:

  * A variable trains when a pattern matches one of the prefixes of its path, taken whole
    component by component: `Mixed_6a/Branch_1/Conv2d_0a_1x1/kernel` has the prefixes `Mixed_6a`,
    `Mixed_6a/Branch_1`, ... and the full path. TF-slim's scopes are prefixes too.
  * A pattern is matched whole and case-sensitively with `fnmatch` (`*`, `?`, `[...]`; `*` also
    crosses a `/`): `Logits` is the classifier, not `AuxLogits`; `Mixed_7*` is every Mixed_7
    block.
  * Paths are the unrolled layout's (TF-slim's names): under `scan_blocks` a stacked run such as
    `Repeat_2/block8_1+...+block8_9` trains when its patterns match every block of the run, is
    frozen when they match none, and stops the job (ConfigError) when they match some: one stacked
    array cannot be half frozen. Top-level scopes (the usual choice) never split a run.
  * A pattern that matches no variable is a ConfigError naming the network's top-level scopes,
    but for a pattern of the aux head (`AuxLogits`) on a network built without it.

Everything else is frozen: no update (its optimizer transform is `optax.set_to_zero`), no weight
decay, not in the gradient clipping's norm, no gradient computed at all (`split`), its parameter
EMA kept equal to the parameters, and its BatchNorm in inference mode: normalised with the moving
statistics, which stay as they are (`config.frozen_bn_train=True` runs the frozen BatchNorms as in
training instead: batch statistics, moving averages updated). A BatchNorm counts as frozen when its
`bias` (TF-slim's `beta`) is.
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Iterator, Optional

import flax
import flax.linen as nn
import jax

from inception_jax.errors import ConfigError
from inception_jax.models.layers import ConvBN
from inception_jax.models.names import AUX_LOGITS
from inception_jax.models.scan import SEPARATOR

TRAINABLE, FROZEN = 'trainable', 'frozen'


def patterns(scopes: Optional[str]) -> tuple[str, ...]:
  """The patterns of `config.trainable_scopes` ('' and None: none, i.e. everything trains)."""
  if not scopes:
    return ()
  return tuple(p.strip().strip('/') for p in str(scopes).split(',') if p.strip().strip('/'))


def _matches(pattern: str, path: tuple[str, ...]) -> bool:
  return any(fnmatch.fnmatchcase('/'.join(path[:n]), pattern) for n in range(1, len(path) + 1))


def _unrolled(path: tuple[str, ...]) -> list[tuple[str, ...]]:
  """The unrolled-layout paths of one (possibly stacked) variable path: one per block."""
  for i, part in enumerate(path):
    if SEPARATOR in part:
      return [unrolled for name in part.split(SEPARATOR)
              for unrolled in _unrolled((*path[:i], name, *path[i + 1:]))]
  return [path]


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def trainable_mask(scopes: Optional[str], params: Any) -> Any:
  """A tree like `params` (either block layout; arrays or shapes) of bools: True where the variable
  trains under `scopes`. Fails (ConfigError) where a pattern matches nothing, or part of a stacked
  run of blocks."""
  wanted = patterns(scopes)
  used = set()

  def trains(path, _) -> bool:
    names = _names(path)
    found = [{p for p in wanted if _matches(p, unrolled)} for unrolled in _unrolled(names)]
    for p in wanted:
      if any(p in f for f in found) and not all(p in f for f in found):
        raise ConfigError(
            f'config.trainable_scopes pattern {p!r} matches some blocks of the scanned run '
            f'{"/".join(names[:-1])} but not all: its variables are stacked in one array that '
            'cannot be half frozen. Set --config.model.scan_blocks=False, or name the whole run '
            '(e.g. its top-level scope).')
    used.update(found[0])
    return bool(found[0])

  mask = jax.tree_util.tree_map_with_path(trains, params)
  unused = [p for p in wanted if p not in used
            and not (fnmatch.fnmatchcase(AUX_LOGITS, p) and AUX_LOGITS not in params)]
  if unused:
    raise ConfigError(
        f'config.trainable_scopes={scopes!r}: {", ".join(repr(p) for p in unused)} matches no '
        'variable of the network; its top-level scopes are ' + ', '.join(sorted(params)) + '.')
  return mask


def labels(scopes: str):
  """`optax.multi_transform`'s labels for `scopes`: a function of the parameters (or updates)."""
  def label(params):
    return jax.tree_util.tree_map(lambda t: TRAINABLE if t else FROZEN,
                                  trainable_mask(scopes, params))
  return label


def split(params: Any, mask: Any) -> tuple[dict, dict]:
  """The trainable and the frozen variables of `params` as flat dicts {path tuple: array}."""
  flat_params = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  flat_mask = flax.traverse_util.flatten_dict(flax.core.unfreeze(mask))
  return ({k: v for k, v in flat_params.items() if flat_mask[k]},
          {k: v for k, v in flat_params.items() if not flat_mask[k]})


def merge(*parts: dict) -> dict:
  """The nested tree of the flat dicts `parts` (from `split`)."""
  return flax.traverse_util.unflatten_dict({k: v for part in parts for k, v in part.items()})


@contextlib.contextmanager
def frozen_batch_norm(mask: Any) -> Iterator[None]:
  """Within it, a training-mode `apply` runs the BatchNorm of every conv unit whose BatchNorm
  `bias` is frozen in `mask` (a `trainable_mask` of the params) in inference mode: normalised by
  its moving statistics, which it leaves as they are."""
  def intercept(call, args, kwargs, context):
    module = context.module
    if isinstance(module, ConvBN) and context.method_name == '__call__':
      node = mask
      for name in (*module.path, 'BatchNorm', 'bias'):
        node = node[name]
      if not node:
        return call(args[0], train=False)
    return call(*args, **kwargs)

  with nn.intercept_methods(intercept):
    yield
