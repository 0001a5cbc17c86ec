"""Keras' `InceptionResNetV2` and `InceptionV3` -> our variables.

Keras names its convolutions only by a creation counter (`conv2d_17`), so layers are matched in
creation order, which is also the order our networks call their layers. `import keras` below is
absolute: it reads the Keras package, not this module.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import numpy as np

from inception_jax.models.layers import ConvBN
from inception_jax.weights.layout import ConversionError, Layout, match_counts, supported

KERAS_APPLICATIONS = {
    'inception_resnet_v2': 'InceptionResNetV2',
    'inception_v3': 'InceptionV3',
}
# Keras' BatchNormalization weights -> ours (a learned gamma is refused: Keras' models have none).
_NORM_NAMES = {'beta': 'bias', 'moving_mean': 'mean', 'moving_variance': 'var'}


def _creation_key(name: str) -> tuple[int, int, str]:
  """Sort key of Keras layer names by creation: auto names by counter, explicit names after."""
  match = re.fullmatch(r'(?:conv2d|batch_normalization)(?:_(\d+))?', name)
  return (0, int(match.group(1) or 0), '') if match else (1, 0, name)


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
  supported(model_name, 'Keras', KERAS_APPLICATIONS)
  keras_model = _load_keras(model_or_path, model_name)
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
