"""The model zoo: names -> Linen modules."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from inception_jax.errors import ConfigError
from inception_jax.models.base import InceptionNetwork
from inception_jax.models.inception_resnet import (
  InceptionResNetV1,
  InceptionResNetV2,
  InceptionResNetV2Paper,
)
from inception_jax.models.inception_v3 import InceptionV3
from inception_jax.models.inception_v4 import InceptionV4

MODELS: dict[str, type[InceptionNetwork]] = {
    'inception_v3': InceptionV3,
    'inception_v4': InceptionV4,
    'inception_resnet_v1': InceptionResNetV1,
    'inception_resnet_v2': InceptionResNetV2,
    'inception_resnet_v2_paper': InceptionResNetV2Paper,
}


def list_models() -> list[str]:
  """Names accepted by `create`."""
  return sorted(MODELS)


def options(name: str) -> list[str]:
  """The keyword options `create(name, ...)` accepts."""
  return sorted(f.name for f in dataclasses.fields(model_class(name))
                if f.name not in ('parent', 'name'))


def model_class(name: str) -> type[InceptionNetwork]:
  if name not in MODELS:
    raise ConfigError(f'Unknown model {name!r}; choose one of {", ".join(list_models())}.')
  return MODELS[name]


def create(name: str, **overrides) -> InceptionNetwork:
  """Returns the Linen module `name` with `overrides` applied to its options.

  Example: `create('inception_resnet_v2', num_classes=10, small_inputs=True, dtype='bfloat16')`.
  """
  cls = model_class(name)
  unknown = sorted(set(overrides) - set(options(name)))
  if unknown:
    raise ConfigError(f'{name} has no option {", ".join(map(repr, unknown))}; '
                      f'its options are: {", ".join(options(name))}.')
  if isinstance(overrides.get('dtype'), str):
    overrides['dtype'] = jnp.dtype(overrides['dtype'])
  # Lists (from JSON records or configs) become tuples: modules hold hashable, comparable options.
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  if overrides.get('repeats') is not None:
    overrides['repeats'] = tuple(overrides['repeats'])
  return cls(**overrides)
