"""Keras' `InceptionResNetV2` and `InceptionV3` -> our variables.

Keras names its convolutions only by a creation counter (`conv2d_17`), so layers are matched in
creation order, which is also the order our networks call their layers. `import keras` below is
absolute: it reads the Keras package, not this module.
"""

from __future__ import annotations

import os
import re
from typing import Any, Union

import flax.linen as nn
import numpy as np

from inception_jax.models.layers import ConvBN
from inception_jax.weights import files
from inception_jax.weights.layout import (
    ConversionError,
    Layout,
    convert_or_redirect,
    few,
    match_counts,
    plural,
)

KERAS_APPLICATIONS = {
    'inception_resnet_v2': 'InceptionResNetV2',
    'inception_v3': 'InceptionV3',
}
# Keras' BatchNormalization weights -> ours (a learned gamma is refused: Keras' models have none).
_NORM_NAMES = {'beta': 'bias', 'moving_mean': 'mean', 'moving_variance': 'var'}
# Per layer with weights, in the model's order: its name and its weights' shapes.
_Shapes = list[tuple[str, list[tuple[int, ...]]]]


def _creation_key(name: str) -> tuple[int, int, str]:
  """Sort key of Keras layer names by creation: auto names by counter, explicit names after."""
  match = re.fullmatch(r'(?:conv2d|batch_normalization)(?:_(\d+))?', name)
  return (0, int(match.group(1) or 0), '') if match else (1, 0, name)


def _h5_shapes(path: str) -> _Shapes:
  """The weight shapes in a Keras `.h5` file, by layer: the legacy format of `keras.applications`'
  downloads (`layer_names`) or Keras 3's `.weights.h5` (`layers/<name>/vars/<i>`)."""
  # deferred: h5py and Keras are optional (Keras weights only)
  import h5py

  shapes: dict[str, list[tuple[int, ...]]] = {}

  def visit(name, item):
    if isinstance(item, h5py.Dataset):
      parts = name.split('/')
      shapes.setdefault(parts[1] if parts[0] == 'layers' else parts[0], []).append(item.shape)

  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f  # a whole model saved as .h5
    root.visititems(visit)
  shapes.pop('optimizer', None)
  return list(shapes.items())


def _model_shapes(keras_model) -> _Shapes:
  return [(layer.name, [tuple(w.shape) for w in layer.weights])
          for layer in keras_model.layers if layer.weights]


def _read(model_or_path: Any) -> tuple[Union[Any, str], _Shapes]:
  """(a `keras.Model`, or the path of an `.h5` weights file to load into one; the weight shapes)."""
  # deferred: Keras is optional (Keras weights only)
  import keras

  if isinstance(model_or_path, keras.Model):
    return model_or_path, _model_shapes(model_or_path)
  path = os.fspath(model_or_path)
  found = files.file_format(path)
  if found == 'keras':
    keras_model = keras.models.load_model(path, compile=False)
    return keras_model, _model_shapes(keras_model)
  if found != 'hdf5':
    raise files.wrong_format(path, found, 'a Keras .keras model or .h5 weights file')
  return path, _h5_shapes(path)


def _fits(shapes: _Shapes, model_name: str) -> bool:
  """Whether weights of these shapes are those of our `model_name`, whatever their names: Keras'
  kernels have our shapes, and its BatchNorms (beta, mean, variance) ours without scale."""
  theirs = sorted(s for _, layer in shapes for s in layer)
  heads = [s for s in theirs if len(s) == 2]
  if len(heads) != 1:
    return False
  layout = Layout(model_name, num_classes=heads[0][1])
  return theirs == sorted(tuple(v.shape) for v in [*layout.params.values(),
                                                    *layout.stats.values()])


def _load_app(path: str, shapes: _Shapes, model_name: str):
  """Keras' application `model_name` with the weights of the `.h5` file `path` (whose shapes are
  checked first: Keras' own error for a file of another model is hundreds of lines)."""
  # deferred: Keras is optional (Keras weights only)
  import keras

  if not _fits(shapes, model_name):
    count = sum(len(layer) for _, layer in shapes)
    raise ConversionError(f'The {count} weights of {path} do not have the shapes of Keras\' '
                          f'{KERAS_APPLICATIONS[model_name]}.')
  app = getattr(keras.applications, KERAS_APPLICATIONS[model_name])
  keras_model = app(weights=None, classifier_activation=None)
  keras_model.load_weights(path)
  return keras_model


def _convert(keras_model, model_name: str) -> dict[str, Any]:
  layers = [layer for layer in keras_model.layers if layer.weights]
  kind = lambda layer: layer.__class__.__name__
  convs = sorted((l for l in layers if kind(l) == 'Conv2D' and not l.use_bias),
                 key=lambda l: _creation_key(l.name))
  norms = sorted((l for l in layers if kind(l) == 'BatchNormalization'),
                 key=lambda l: _creation_key(l.name))
  biased = [l for l in layers if kind(l) == 'Conv2D' and l.use_bias]
  dense = [l for l in layers if kind(l) == 'Dense']
  if not dense:
    raise ConversionError('The Keras model has no classifier: build it with include_top=True.')
  layout = Layout(model_name, num_classes=int(dense[-1].units))
  match_counts('conv-BN units (convolutions)', layout.units[ConvBN], convs, 'Keras')
  match_counts('conv-BN units (BatchNorms)', layout.units[ConvBN], norms, 'Keras')
  match_counts('biased convolutions', layout.units[nn.Conv], biased, 'Keras')
  match_counts('dense layers', layout.units[nn.Dense], dense, 'Keras')
  for path, conv, norm in zip(layout.units[ConvBN], convs, norms):
    weights = {w.path.split('/')[-1]: np.asarray(w) for w in norm.weights}
    if 'gamma' in weights:
      raise ConversionError(f'{norm.name} learns gamma; our {model_name} expects bn_scale=False.')
    layout.put_unit(path, conv.get_weights()[0], {_NORM_NAMES[k]: v for k, v in weights.items()},
                    conv.name)
  for path, layer in [*zip(layout.units[nn.Conv], biased), *zip(layout.units[nn.Dense], dense)]:
    kernel, bias = layer.get_weights()
    layout.put_biased(path, kernel, bias, layer.name)
  return layout.variables('Keras')


def from_keras(model_or_path: Any, model_name: str) -> dict[str, Any]:
  """Keras InceptionResNetV2 / InceptionV3 (a `keras.Model`, a `.keras` file or an `.h5` weights
  file) -> `{'params', 'batch_stats'}` for `create(model_name, num_classes=<its classes>)`. Weights
  of the other model are a `ConversionError` naming it (its `fits`)."""
  keras_model, shapes = _read(model_or_path)

  def convert(name):
    loaded = _load_app(keras_model, shapes, name) if isinstance(keras_model, str) else keras_model
    return _convert(loaded, name)

  count = sum(len(layer) for _, layer in shapes)
  return convert_or_redirect(
      convert, lambda name: _fits(shapes, name), model_name, 'Keras', list(KERAS_APPLICATIONS),
      lambda: f'they are {plural(count, "weight")} in layers such as {few([n for n, _ in shapes])}')
