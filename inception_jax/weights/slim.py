"""TF-slim's TF1 checkpoints -> our variables.

Their variable names are our paths under the network's scope, apart from the leaf names
(`SLIM_LEAVES`) and the classifiers (`SLIM_HEADS`); the 1001st (background) class is dropped or
kept. TensorFlow is imported only when a checkpoint is read.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from inception_jax import tf_import
from inception_jax.errors import first_line
from inception_jax.models import model_class
from inception_jax.models.names import AUX_LOGITS, LOGITS
from inception_jax.weights import files
from inception_jax.weights.layout import (
    ConversionError,
    FileFormatError,
    Layout,
    Path,
    convert_or_redirect,
    few,
    fits_when,
    plural,
    unfit,
)

SLIM_SCOPES = {
    'inception_v4': 'InceptionV4',
    'inception_resnet_v2': 'InceptionResnetV2',
    'inception_v3': 'InceptionV3',
}
# Our variable names -> TF-slim's, by the last two path components.
SLIM_LEAVES = {('BatchNorm', 'bias'): ('BatchNorm', 'beta'),
               ('BatchNorm', 'scale'): ('BatchNorm', 'gamma'),
               ('BatchNorm', 'mean'): ('BatchNorm', 'moving_mean'),
               ('BatchNorm', 'var'): ('BatchNorm', 'moving_variance')}
# The classifiers that TF-slim names differently or builds as 1x1 convolutions.
SLIM_HEADS = {'inception_v4': {LOGITS: 'Logits/Logits'},
              'inception_resnet_v2': {LOGITS: 'Logits/Logits'},
              'inception_v3': {LOGITS: 'Logits/Conv2d_1c_1x1'}}
# What a training checkpoint holds beside the weights: not read, not an error.
SLIM_NOT_WEIGHTS = re.compile(r'(^|/)(global_step|beta[12]_power)$|/(RMSProp|RMSProp_1|Momentum|'
                              r'Adam|Adam_1|Adagrad|ExponentialMovingAverage)$')


def slim_name(path: Path, model_name: str) -> str:
  """TF-slim's checkpoint name of our variable `path` (a tuple of its names, unrolled layout)."""
  module, leaf = path[:-1], path[-1]
  if path[-2:] in SLIM_LEAVES:
    module, leaf = path[:-2], '/'.join(SLIM_LEAVES[path[-2:]])
  else:
    leaf = {'kernel': 'weights', 'bias': 'biases'}[leaf]
  name = '/'.join(module)
  name = SLIM_HEADS[model_name].get(name, name)
  return f'{SLIM_SCOPES[model_name]}/{name}/{leaf}'


def _slim_checkpoint(path: str) -> str:
  """A checkpoint path from a path prefix (`x.ckpt` of `x.ckpt.index`; the name of one of its files
  works too), a V1 file (as released in TF-slim's tarballs) or a directory holding one checkpoint.
  A file of another source is a `FileFormatError` naming it."""
  path = files.tf_prefix(path)
  found = files.file_format(path)
  if found != 'tf':
    raise files.wrong_format(path, found, 'a TF1 checkpoint')
  if not os.path.isdir(path):
    return path
  latest = tf_import.tensorflow().train.latest_checkpoint(path)
  if latest:
    return latest
  found = sorted({os.path.join(path, f[:-len('.index')]) if f.endswith('.index') else
                  os.path.join(path, f) for f in os.listdir(path)
                  if f.endswith('.index') or f.endswith('.ckpt')})
  if len(found) != 1:
    raise FileFormatError(f'{path} holds {len(found)} checkpoints ({few(found) or "none"}); '
                          'name the one to read.')
  return found[0]


def _reader(path: str):
  """TensorFlow's reader of the checkpoint at `path`; an unreadable one is a `FileFormatError`."""
  tf = tf_import.tensorflow()
  try:
    return tf.train.load_checkpoint(path)
  except tf.errors.OpError as e:
    reason = first_line(e, text=e.message)
    raise FileFormatError(f'TensorFlow cannot read the checkpoint {path}: {reason}') from None


def _convert(shapes: Mapping[str, Sequence[int]], read: Callable[[str], Any], checkpoint: str,
             model_name: str, background: str, aux_logits: Optional[bool],
             moving_averages: bool) -> dict[str, Any]:
  """`from_slim` of the checkpoint with these variable `shapes`, whose tensors `read` returns."""
  head = slim_name((LOGITS, 'bias'), model_name)
  if head not in shapes:
    raise ConversionError(f"{checkpoint} has no {head}, TF-slim's classifier of {model_name}.")
  aux_scope = f'{SLIM_SCOPES[model_name]}/{AUX_LOGITS}/'
  has_aux = any(n.startswith(aux_scope) for n in shapes)
  if aux_logits and not has_aux:
    raise ConversionError(f'{checkpoint} has no auxiliary head ({aux_scope}...).')
  aux = has_aux if aux_logits is None else aux_logits
  num_classes = shapes[head][-1] - (1 if background == 'drop' else 0)
  bn_scale = any(n.endswith('/BatchNorm/gamma') for n in shapes)
  layout = Layout(model_name, num_classes=num_classes, aux_logits=aux, bn_scale=bn_scale)

  classifiers = set(model_class(model_name).classifier_scopes())
  used = set()
  for path in [*layout.params, *layout.stats]:
    name = slim_name(path, model_name)
    if name not in shapes:
      raise ConversionError(f'{checkpoint} has no {name} (for {"/".join(path)}).')
    source = name + '/ExponentialMovingAverage'
    value = read(source if moving_averages and source in shapes else name)
    used.add(name)
    target = (layout.stats if path in layout.stats else layout.params)[path].shape
    if value.ndim == 4 and len(target) == 2 and value.shape[:2] == (1, 1):
      value = value[0, 0]  # a classifier that TF-slim builds as a 1x1 convolution
    if background == 'drop' and path[:-1] in classifiers:
      value = value[..., 1:]
    layout.put(path, value, name)
  leftover = [n for n in shapes if n not in used and not SLIM_NOT_WEIGHTS.search(n)
              and not (not aux and n.startswith(aux_scope))]
  if leftover:
    raise unfit(f'Variables of {checkpoint} that fit no variable of {model_name} '
                f'({len(leftover):,})', sorted(leftover))
  return layout.variables('TF-slim')


def from_slim(checkpoint: str, model_name: str, background: str = 'drop',
              aux_logits: Optional[bool] = None, moving_averages: bool = True) -> dict[str, Any]:
  """A TF-slim TF1 checkpoint (`inception_v4.ckpt`, `inception_resnet_v2_2016_08_30.ckpt`, ...;
  the path prefix or its directory) -> our variables. A checkpoint of another of TF-slim's models
  is a `ConversionError` naming it (its `fits`).

  Args:
    background: TF-slim's heads have 1001 classes, class 0 being "background". 'drop' (default)
      gives a 1000-class head in the order of timm, Keras and TFDS; 'keep' keeps all 1001.
    aux_logits: read the auxiliary head; None reads it when the checkpoint has one.
    moving_averages: where a variable has an `ExponentialMovingAverage` shadow (checkpoints saved
      during training with `--moving_average_decay`), read the average, as TF-slim's eval does.
  """
  if background not in ('drop', 'keep'):
    raise ValueError(f"background must be 'drop' or 'keep', got {background!r}.")
  reader = _reader(_slim_checkpoint(checkpoint))
  shapes = reader.get_variable_to_shape_map()
  # Other models are checked on shapes alone: a zero broadcast to each tensor's shape (no memory)
  # stands for it.
  blank = lambda name: np.broadcast_to(np.float32(0), shapes[name])
  convert = lambda name, read: _convert(shapes, read, checkpoint, name, background, aux_logits,
                                        moving_averages)
  scopes = sorted({n.split('/')[0] for n in shapes})
  return convert_or_redirect(
      lambda name: convert(name, reader.get_tensor),
      lambda name: fits_when(lambda: convert(name, blank)), model_name, 'TF-slim',
      list(SLIM_SCOPES),
      lambda: f'it holds {plural(len(shapes), "variable")} under {few(scopes, 5)}')
