"""Pretrained weights from other implementations, as Flax variables for `inception_jax.models`.

`from_keras(model_or_path, model_name)` reads Keras' `InceptionResNetV2` and `InceptionV3`. Keras
builds its convolutions without explicit names, so layers are matched by creation order: Keras numbers
auto-named layers in the order it creates them (`conv2d`, `conv2d_1`, ...), and our variables are
created in the order of the networks' figures, which is also Keras' order. Every pair is checked by
shape, and a count mismatch is an error, so a wrong match cannot pass silently.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import flax.linen as nn
import numpy as np

from inception_jax.models import create
from inception_jax.models.layers import ConvBN
from inception_jax.models.summary import abstract_variables

KERAS_APPLICATIONS = {
    'inception_resnet_v2': 'InceptionResNetV2',
    'inception_v3': 'InceptionV3',
}


class ConversionError(ValueError):
  """A checkpoint does not fit the model: the message names the tensors."""


def _layout(model_name: str, num_classes: int):
  """Our layers in the order the network calls them: (conv-BN units, biased convs, dense layers),
  each a variable path tuple. Recorded while tracing the model (variable dicts are sorted by name)."""
  order = {ConvBN: [], nn.Conv: [], nn.Dense: []}

  def record(next_fun, args, kwargs, context):
    kind = type(context.module)
    if context.method_name == '__call__' and kind in order:
      path = tuple(context.module.path)
      if path not in order[kind]:
        order[kind].append(path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    variables = abstract_variables(create(model_name, num_classes=num_classes), 299)
  return variables, order[ConvBN], order[nn.Conv], order[nn.Dense]


def _creation_key(name: str) -> tuple[int, int, str]:
  """Sort key of Keras layer names by creation: auto names by counter, explicit names after."""
  match = re.fullmatch(r'(?:conv2d|batch_normalization)(?:_(\d+))?', name)
  return (0, int(match.group(1) or 0), '') if match else (1, 0, name)


def _check(path, expected, found) -> None:
  if tuple(expected) != tuple(found):
    raise ConversionError(f'{"/".join(path)}: expected shape {tuple(expected)}, found '
                          f'{tuple(found)}')


def _load_keras(model_or_path, model_name: str):
  import keras

  if isinstance(model_or_path, keras.Model):
    return model_or_path
  path = str(model_or_path)
  if path.endswith('.keras'):
    return keras.models.load_model(path, compile=False)
  app = getattr(keras.applications, KERAS_APPLICATIONS[model_name])
  model = app(weights=None, classifier_activation=None)
  model.load_weights(path)
  return model


def from_keras(model_or_path: Any, model_name: str) -> dict[str, Any]:
  """Keras InceptionResNetV2 / InceptionV3 (a `keras.Model`, a `.keras` file or an `.h5` weights
  file) -> `{'params', 'batch_stats'}` for `create(model_name, num_classes=<its classes>)`."""
  if model_name not in KERAS_APPLICATIONS:
    raise ValueError(f'Keras has no {model_name}; from_keras takes one of '
                     f'{", ".join(KERAS_APPLICATIONS)}.')
  keras_model = _load_keras(model_or_path, model_name)
  layers = [layer for layer in keras_model.layers if layer.weights]
  convs = sorted((l for l in layers if l.__class__.__name__ == 'Conv2D' and not l.use_bias),
                 key=lambda l: _creation_key(l.name))
  norms = sorted((l for l in layers if l.__class__.__name__ == 'BatchNormalization'),
                 key=lambda l: _creation_key(l.name))
  biased = [l for l in layers if l.__class__.__name__ == 'Conv2D' and l.use_bias]
  dense = [l for l in layers if l.__class__.__name__ == 'Dense']
  if not dense:
    raise ConversionError('The Keras model has no classifier: build it with include_top=True.')
  num_classes = int(dense[-1].units)
  variables, our_conv_bn, our_biased, our_dense = _layout(model_name, num_classes)
  counts = {'conv-BN units': (len(our_conv_bn), len(convs), len(norms)),
            'biased convs': (len(our_biased), len(biased), len(biased)),
            'dense layers': (len(our_dense), len(dense), len(dense))}
  for what, (ours, theirs, theirs_too) in counts.items():
    if not ours == theirs == theirs_too:
      raise ConversionError(f'{model_name} has {ours} {what}; the Keras model has {theirs}.')

  params = flax.traverse_util.flatten_dict(variables['params'])
  stats = flax.traverse_util.flatten_dict(variables['batch_stats'])
  out_params, out_stats = {}, {}

  def put(target, out, path, value):
    _check(path, target[path].shape, value.shape)
    out[path] = np.asarray(value, np.float32)

  for module, conv, norm in zip(our_conv_bn, convs, norms):
    put(params, out_params, module + ('kernel',), conv.get_weights()[0])
    weights = {w.path.split('/')[-1]: np.asarray(w) for w in norm.weights}
    if 'gamma' in weights:
      raise ConversionError(f'{norm.name} learns gamma; our {model_name} expects bn_scale=False.')
    put(params, out_params, module + ('BatchNorm', 'bias'), weights['beta'])
    put(stats, out_stats, module + ('BatchNorm', 'mean'), weights['moving_mean'])
    put(stats, out_stats, module + ('BatchNorm', 'var'), weights['moving_variance'])
  for module, layer in [*zip(our_biased, biased), *zip(our_dense, dense)]:
    kernel, bias = layer.get_weights()
    put(params, out_params, module + ('kernel',), kernel)
    put(params, out_params, module + ('bias',), bias)
  missing = [p for p in params if p not in out_params] + [p for p in stats if p not in out_stats]
  if missing:
    raise ConversionError('Not filled from Keras: ' + ', '.join('/'.join(p) for p in missing))
  return {'params': flax.traverse_util.unflatten_dict(out_params),
          'batch_stats': flax.traverse_util.unflatten_dict(out_stats)}
