"""Sizes of a model without compiling it: parameter counts and multiply-accumulates (MACs)."""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models.registry import create, list_models


def image_spec(size: int | tuple[int, int], batch: int = 1) -> jax.ShapeDtypeStruct:
  height, width = (size, size) if isinstance(size, int) else size
  return jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)


def abstract_variables(model: nn.Module, size: int | tuple[int, int]) -> Any:
  """The model's variables as shapes only (`jax.eval_shape`: nothing is computed or compiled)."""
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image_spec(size))


def count_params(variables: Any) -> int:
  """Number of trainable parameters (the `params` collection; BatchNorm statistics excluded)."""
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(variables['params']))


def count_macs(model: nn.Module, variables: Any, size: int | tuple[int, int]) -> int:
  """Multiply-accumulates of one eval-mode forward pass of one image, in convs and dense layers.

  Counted on the traced program (see `traced_macs`), so scanned blocks count once per iteration.
  """
  return traced_macs(lambda v, x: model.apply(v, x, train=False), variables, image_spec(size))


def traced_macs(fn: Callable[..., Any], *args: Any) -> int:
  """Multiply-accumulates of the convolutions and matrix products in `fn(*args)`, from its jaxpr."""
  return _macs(jax.make_jaxpr(fn)(*args).jaxpr)


def _macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features
    elif name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
    inner = sum(_macs(sub) for sub in _sub_jaxprs(eqn.params))
    total += inner * eqn.params.get('length', 1) if name == 'scan' else inner
  return total


def _sub_jaxprs(params: dict):
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, 'eqns'):
        yield item
      elif hasattr(item, 'jaxpr') and hasattr(item.jaxpr, 'eqns'):
        yield item.jaxpr


def zoo(size: int = 299, **options: Any) -> list[dict[str, Any]]:
  """Every registered model's parameters, MACs and output at `size` x `size` with `options`
  (e.g. `num_classes=1000, bn_scale=True`), from shapes alone: nothing is compiled or run. A size
  below a model's minimum is a `ValueError` naming it."""
  rows = []
  for name in list_models():
    model = create(name, **options)
    model.check_input(image_spec(size).shape)
    # One trace of init gives the variables' and the output's shapes and, from its forward pass
    # (the initialisers multiply nothing), the MACs.
    traced, (output, variables) = jax.make_jaxpr(
        lambda x, model=model: model.init_with_output(jax.random.key(0), x, train=False),
        return_shape=True)(image_spec(size))
    rows.append({'model': name, 'params': count_params(variables),
                 'gmacs': _macs(traced.jaxpr) / 1e9,
                 'output': (tuple(output.shape), str(output.dtype))})
  return rows


def zoo_table(rows: list[dict[str, Any]], size: int = 299) -> str:
  """`zoo`'s rows as the text table that `python -m inception_jax.models` prints."""
  lines = [f'{"model":<28}{"params":>14}{"GMACs":>9}  output at {size}x{size}']
  for row in rows:
    shape, dtype = row['output']
    lines.append(f'{row["model"]:<28}{row["params"]:>14,}{row["gmacs"]:>9.2f}  {shape} {dtype}')
  return '\n'.join(lines)
