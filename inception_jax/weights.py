"""Pretrained weights from other implementations, as Flax variables for `inception_jax.models`.

Three readers, each returning `{'params', 'batch_stats'}` for `create(model_name, **options)`, with
the options it needs given by `options_from_variables(variables, source)`:

- `from_keras(model_or_path, model_name)`: Keras' `InceptionResNetV2` and `InceptionV3`. Keras
  names its convolutions only by a creation counter (`conv2d_17`), so layers are matched in creation
  order, which is also the order our networks call their layers.
- `from_timm(state_dict_or_path, model_name)`: timm's `inception_v4`, `inception_resnet_v2` and
  `inception_v3` (a mapping of names to arrays, a `.safetensors` file or a `.pth` file). timm's
  module names are translated to our blocks; inside a block, units are matched in order.
- `from_slim(checkpoint, model_name, background='drop')`: TF-slim's TF1 checkpoints, whose variable
  names are our paths under the network's scope; the 1001st (background) class is dropped or kept.

Every tensor is checked by shape; a mismatch names the tensor and both shapes, and unused or
missing tensors are listed: nothing is silently ignored except what is not a weight (BatchNorm's
`num_batches_tracked` counters, TF's `global_step` and optimizer slots).
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import numpy as np

from inception_jax.models import create
from inception_jax.models.layers import ConvBN
from inception_jax.models.summary import abstract_variables
from inception_jax.models.names import lettered

KERAS_APPLICATIONS = {
    'inception_resnet_v2': 'InceptionResNetV2',
    'inception_v3': 'InceptionV3',
}
TIMM_MODELS = ('inception_v4', 'inception_resnet_v2', 'inception_v3')
SLIM_SCOPES = {
    'inception_v4': 'InceptionV4',
    'inception_resnet_v2': 'InceptionResnetV2',
    'inception_v3': 'InceptionV3',
}

Path = tuple[str, ...]


class ConversionError(ValueError):
  """A checkpoint does not fit the model: the message names the tensors."""


def _supported(model_name: str, source: str, models: Iterable[str]) -> None:
  if model_name not in models:
    raise ValueError(f'{source} has no {model_name}; it covers {", ".join(models)}.')


def options_from_variables(variables: Mapping[str, Any], model_name: str, source: str) -> dict[str, Any]:
  """The `create(model_name, ...)` options under which `variables` converted from `source`
  ('keras', 'timm' or 'slim') fit and compute what the source computes: classifier width, aux
  head, BatchNorm gamma, and for timm's Inception-v3 average pools that count padding."""
  params = variables['params']
  options = {'num_classes': int(np.shape(params['Logits']['bias'])[0]),
             'aux_logits': 'AuxLogits' in params,
             'bn_scale': 'scale' in params['Conv2d_1a_3x3']['BatchNorm']}
  if source == 'timm' and model_name == 'inception_v3':
    options['avg_pool_include_pad'] = True
  return options


class _Layout:
  """Our variables (shapes only) and our layers in the order the network calls them: conv-BN
  units, biased convs and dense layers, each as a path. Flax sorts variable dicts by name, so the
  order is recorded while tracing."""

  def __init__(self, model_name: str, **options):
    self.units: dict[type, list[Path]] = {ConvBN: [], nn.Conv: [], nn.Dense: []}

    def record(next_fun, args, kwargs, context):
      kind = type(context.module)
      if context.method_name == '__call__' and kind in self.units:
        path = tuple(context.module.path)
        if path not in self.units[kind]:
          self.units[kind].append(path)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      variables = abstract_variables(create(model_name, **options), 299)
    self.params = flax.traverse_util.flatten_dict(variables['params'])
    self.stats = flax.traverse_util.flatten_dict(variables.get('batch_stats', {}))
    self.out_params: dict[Path, np.ndarray] = {}
    self.out_stats: dict[Path, np.ndarray] = {}

  def put(self, path: Path, value: Any, source_name: str = '') -> None:
    """Stores `value` at variable `path` (BatchNorm mean/var go to batch_stats), shape-checked."""
    stats = path[-2:] in (('BatchNorm', 'mean'), ('BatchNorm', 'var'))
    target, out = (self.stats, self.out_stats) if stats else (self.params, self.out_params)
    value = np.asarray(value, np.float32)
    where = f'{source_name} -> {"/".join(path)}' if source_name else '/'.join(path)
    if path not in target:
      raise ConversionError(f'{where}: the model has no such variable.')
    if tuple(target[path].shape) != value.shape:
      raise ConversionError(f'{where}: expected shape {tuple(target[path].shape)}, found '
                            f'{value.shape}')
    out[path] = value

  def put_unit(self, path: Path, kernel: Any, norm: Mapping[str, Any], source_name: str = ''):
    """One conv-BN unit: `norm` holds `bias`, `mean`, `var` and, when learned, `scale`."""
    self.put(path + ('kernel',), kernel, source_name)
    for name, value in norm.items():
      self.put(path + ('BatchNorm', name), value, source_name)

  def variables(self, source: str) -> dict[str, Any]:
    missing = [p for p in self.params if p not in self.out_params]
    missing += [p for p in self.stats if p not in self.out_stats]
    if missing:
      raise ConversionError(f'Not filled from {source} ({len(missing)}): ' +
                            ', '.join('/'.join(p) for p in missing))
    return {'params': flax.traverse_util.unflatten_dict(self.out_params),
            'batch_stats': flax.traverse_util.unflatten_dict(self.out_stats)}


def _match_counts(what: str, ours: Sequence, theirs: Sequence, source: str) -> None:
  if len(ours) != len(theirs):
    raise ConversionError(f'{what}: the model has {len(ours)}, {source} has {len(theirs)}.')


# ----------------------------------------------------------------------------------------- Keras

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
  _supported(model_name, 'Keras', KERAS_APPLICATIONS)
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
  layout = _Layout(model_name, num_classes=int(dense[-1].units))
  _match_counts('conv-BN units (convolutions)', layout.units[ConvBN], convs, 'Keras')
  _match_counts('conv-BN units (BatchNorms)', layout.units[ConvBN], norms, 'Keras')
  _match_counts('biased convolutions', layout.units[nn.Conv], biased, 'Keras')
  _match_counts('dense layers', layout.units[nn.Dense], dense, 'Keras')
  names = {'beta': 'bias', 'moving_mean': 'mean', 'moving_variance': 'var'}
  for path, conv, norm in zip(layout.units[ConvBN], convs, norms):
    weights = {w.path.split('/')[-1]: np.asarray(w) for w in norm.weights}
    if 'gamma' in weights:
      raise ConversionError(f'{norm.name} learns gamma; our {model_name} expects bn_scale=False.')
    layout.put_unit(path, conv.get_weights()[0], {names[k]: v for k, v in weights.items()},
                    conv.name)
  for path, layer in [*zip(layout.units[nn.Conv], biased), *zip(layout.units[nn.Dense], dense)]:
    kernel, bias = layer.get_weights()
    layout.put(path + ('kernel',), kernel, layer.name)
    layout.put(path + ('bias',), bias, layer.name)
  return layout.variables('Keras')


# ------------------------------------------------------------------------------------------ timm

V4_FEATURES = ['Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'Mixed_3a', 'Mixed_4a',
               'Mixed_5a', *lettered('Mixed_5', 4), 'Mixed_6a', *lettered('Mixed_6', 7),
               'Mixed_7a', *lettered('Mixed_7', 3)]
IRV2_MODULES = {'conv2d_1a': 'Conv2d_1a_3x3', 'conv2d_2a': 'Conv2d_2a_3x3',
                'conv2d_2b': 'Conv2d_2b_3x3', 'conv2d_3b': 'Conv2d_3b_1x1',
                'conv2d_4a': 'Conv2d_4a_3x3', 'mixed_5b': 'Mixed_5b', 'mixed_6a': 'Mixed_6a',
                'mixed_7a': 'Mixed_7a', 'block8': 'Block8', 'conv2d_7b': 'Conv2d_7b_1x1',
                'classif': 'Logits'}
IRV2_REPEATS = {'repeat': ('Repeat', 'block35'), 'repeat_1': ('Repeat_1', 'block17'),
                'repeat_2': ('Repeat_2', 'block8')}
# torchvision's branch names in Inception-v3 blocks, in the order of TF-slim's Branch_0..3 (one
# order fits all five block types: each uses a subsequence).
V3_BRANCHES = ('branch1x1', 'branch3x3', 'branch5x5', 'branch7x7', 'branch7x7x3', 'branch3x3dbl',
               'branch7x7dbl', 'branch_pool')


def _natural(parts: Sequence[str]) -> tuple:
  return tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in parts)


def _timm_v4(parts):
  if parts[0] == 'features' and len(parts) > 1 and parts[1].isdigit() and \
      int(parts[1]) < len(V4_FEATURES):
    return (V4_FEATURES[int(parts[1])],), _natural(parts[2:])
  return (('Logits',), ()) if parts == ['last_linear'] else None


def _timm_irv2(parts):
  if parts[0] in IRV2_REPEATS and len(parts) > 1 and parts[1].isdigit():
    scope, block = IRV2_REPEATS[parts[0]]
    return (scope, f'{block}_{int(parts[1]) + 1}'), _natural(parts[2:])
  if parts[0] in IRV2_MODULES:
    return (IRV2_MODULES[parts[0]],), _natural(parts[1:])
  return None


def _timm_v3(parts):
  top = 'Logits' if parts[0] == 'fc' else parts[0]
  if len(parts) > 1:
    match = re.fullmatch('(' + '|'.join(sorted(V3_BRANCHES, key=len, reverse=True)) + ')(.*)',
                         parts[1])
    if match:
      return (top,), ((V3_BRANCHES.index(match[1]), match[2]),) + _natural(parts[2:])
  return (top,), _natural(parts[1:])


TIMM_HEADS = {'inception_v4': 'last_linear', 'inception_resnet_v2': 'classif',
              'inception_v3': 'fc'}
TIMM_BLOCKS: dict[str, Callable] = {'inception_v4': _timm_v4, 'inception_resnet_v2': _timm_irv2,
                                    'inception_v3': _timm_v3}


def _block_of(path: Path) -> Path:
  return path[:2] if path[0].startswith('Repeat') else path[:1]


def read_state_dict(path: str) -> dict[str, Any]:
  """A timm state dict from a `.safetensors` file (numpy arrays; no torch needed) or a
  `.pth`/`.bin` file (torch tensors)."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file
    return load_file(path)
  try:
    import torch
  except ImportError as e:
    raise ImportError(f'Reading {path} needs PyTorch (pip install torch), or convert the '
                      '.safetensors file of the same weights, which needs no torch.') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  for key in ('state_dict', 'model', 'state_dict_ema'):
    if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
      state = state[key]
      break
  return dict(state)


def from_timm(state_dict_or_path: Any, model_name: str) -> dict[str, Any]:
  """timm `inception_v4` / `inception_resnet_v2` / `inception_v3` weights -> our variables.

  Takes a mapping of names to arrays (numpy or torch) or a `.safetensors` / `.pth` path. timm keeps
  BatchNorm's gamma, so the result fits `create(model_name, bn_scale=True, ...)`; for
  `inception_v3` also `avg_pool_include_pad=True` (timm's v3 pools count padding). The options are
  `options_from_variables(variables, model_name, 'timm')`.
  """
  _supported(model_name, 'timm', TIMM_MODELS)
  state = state_dict_or_path
  if isinstance(state, (str, os.PathLike)):
    state = read_state_dict(os.fspath(state))
  state = {k: np.asarray(v.float().numpy() if hasattr(v, 'float') else v) for k, v in state.items()
           if not k.endswith('.num_batches_tracked')}
  used: set[str] = set()
  units = {ConvBN: collections.defaultdict(list), nn.Conv: collections.defaultdict(list),
           nn.Dense: collections.defaultdict(list)}
  for key in state:
    if key in used:
      continue
    prefix, _, leaf = key.rpartition('.')
    bn = prefix[:-len('.conv')] + '.bn' if prefix.endswith('.conv') else None
    if bn and leaf == 'weight' and f'{bn}.running_mean' in state:
      module, names = prefix[:-len('.conv')], {
          'kernel': key, 'scale': f'{bn}.weight', 'bias': f'{bn}.bias',
          'mean': f'{bn}.running_mean', 'var': f'{bn}.running_var'}
      kind = ConvBN
    elif leaf == 'weight' and f'{prefix}.bias' in state and state[key].ndim in (2, 4):
      module, names = prefix, {'kernel': key, 'bias': f'{prefix}.bias'}
      kind = nn.Conv if state[key].ndim == 4 else nn.Dense
    else:
      continue
    located = TIMM_BLOCKS[model_name](module.split('.'))
    if located is None or any(n not in state for n in names.values()):
      continue
    block, order = located
    units[kind][block].append((order, module, names))
    used.update(names.values())
  leftover = [k for k in state if k not in used]
  if leftover:
    raise ConversionError(f'{len(leftover)} tensors of the state dict fit no layer of '
                          f'{model_name}: {", ".join(leftover)}')

  heads = units[nn.Dense].get(('Logits',))
  if not heads:
    raise ConversionError(f'No classifier in the state dict (timm calls it '
                          f'{TIMM_HEADS[model_name]}).')
  num_classes = state[heads[0][2]['kernel']].shape[0]
  aux = ('AuxLogits',) in units[ConvBN]
  layout = _Layout(model_name, num_classes=num_classes, bn_scale=True, aux_logits=aux)
  for kind, by_block in units.items():
    ours = collections.defaultdict(list)
    for path in layout.units[kind]:
      ours[_block_of(path)].append(path)
    for block in sorted(set(ours) | set(by_block)):
      theirs = sorted(by_block.get(block, []), key=lambda u: u[0])
      _match_counts(f'{"/".join(block)}: {kind.__name__} layers', ours[block], theirs, 'timm')
      for path, (_, module, names) in zip(ours[block], theirs):
        kernel = state[names['kernel']]
        kernel = kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel.T
        if kind is ConvBN:
          layout.put_unit(path, kernel, {k: state[names[k]] for k in ('scale', 'bias', 'mean', 'var')},
                          module)
        else:
          layout.put(path + ('kernel',), kernel, module)
          layout.put(path + ('bias',), state[names['bias']], module)
  return layout.variables('timm')


# --------------------------------------------------------------------------------------- TF-slim

# Our variable names -> TF-slim's, by the last two path components.
SLIM_LEAVES = {('BatchNorm', 'bias'): ('BatchNorm', 'beta'),
               ('BatchNorm', 'scale'): ('BatchNorm', 'gamma'),
               ('BatchNorm', 'mean'): ('BatchNorm', 'moving_mean'),
               ('BatchNorm', 'var'): ('BatchNorm', 'moving_variance')}
# The classifiers that TF-slim names differently or builds as 1x1 convolutions.
SLIM_HEADS = {'inception_v4': {'Logits': 'Logits/Logits'},
              'inception_resnet_v2': {'Logits': 'Logits/Logits'},
              'inception_v3': {'Logits': 'Logits/Conv2d_1c_1x1'}}
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
  """A checkpoint path from a path prefix (`x.ckpt` of `x.ckpt.index`), a V1 file (as released in
  TF-slim's tarballs) or a directory holding one checkpoint."""
  if not os.path.isdir(path):
    return path
  import tensorflow as tf
  latest = tf.train.latest_checkpoint(path)
  if latest:
    return latest
  found = sorted({os.path.join(path, f[:-len('.index')]) if f.endswith('.index') else
                  os.path.join(path, f) for f in os.listdir(path)
                  if f.endswith('.index') or f.endswith('.ckpt')})
  if len(found) != 1:
    raise ConversionError(f'{path} holds {len(found)} checkpoints ({", ".join(found) or "none"}); '
                          'name the one to read.')
  return found[0]


def from_slim(checkpoint: str, model_name: str, background: str = 'drop',
              aux_logits: Optional[bool] = None, moving_averages: bool = True) -> dict[str, Any]:
  """A TF-slim TF1 checkpoint (`inception_v4.ckpt`, `inception_resnet_v2_2016_08_30.ckpt`, ...;
  the path prefix or its directory) -> our variables.

  Args:
    background: TF-slim's heads have 1001 classes, class 0 being "background". 'drop' (default)
      gives a 1000-class head in the order of timm, Keras and TFDS; 'keep' keeps all 1001.
    aux_logits: read the auxiliary head; None reads it when the checkpoint has one.
    moving_averages: where a variable has an `ExponentialMovingAverage` shadow (checkpoints saved
      during training with `--moving_average_decay`), read the average, as TF-slim's eval does.
  """
  _supported(model_name, 'TF-slim', SLIM_SCOPES)
  if background not in ('drop', 'keep'):
    raise ValueError(f"background must be 'drop' or 'keep', got {background!r}.")
  import tensorflow as tf

  reader = tf.train.load_checkpoint(_slim_checkpoint(checkpoint))
  shapes = reader.get_variable_to_shape_map()
  scope = SLIM_SCOPES[model_name]
  head = slim_name(('Logits', 'bias'), model_name)
  if head not in shapes:
    found = sorted({n.split('/')[0] for n in shapes})
    raise ConversionError(f'{checkpoint} has no {head}: is it a TF-slim {model_name} checkpoint? '
                          f'Its top-level scopes: {", ".join(found)}.')
  has_aux = any(n.startswith(f'{scope}/AuxLogits/') for n in shapes)
  if aux_logits and not has_aux:
    raise ConversionError(f'{checkpoint} has no auxiliary head ({scope}/AuxLogits/...).')
  aux = has_aux if aux_logits is None else aux_logits
  num_classes = shapes[head][-1] - (1 if background == 'drop' else 0)
  bn_scale = any(n.endswith('/BatchNorm/gamma') for n in shapes)
  layout = _Layout(model_name, num_classes=num_classes, aux_logits=aux, bn_scale=bn_scale)

  classifiers = {('Logits',), ('AuxLogits', create(model_name).aux_names[1])}
  used = set()
  for path in [*layout.params, *layout.stats]:
    name = slim_name(path, model_name)
    if name not in shapes:
      raise ConversionError(f'{checkpoint} has no {name} (for {"/".join(path)}).')
    source = name + '/ExponentialMovingAverage'
    value = reader.get_tensor(source if moving_averages and source in shapes else name)
    used.add(name)
    target = (layout.stats if path in layout.stats else layout.params)[path].shape
    if value.ndim == 4 and len(target) == 2 and value.shape[:2] == (1, 1):
      value = value[0, 0]  # a classifier that TF-slim builds as a 1x1 convolution
    if background == 'drop' and path[:-1] in classifiers:
      value = value[..., 1:]
    layout.put(path, value, name)
  leftover = [n for n in shapes if n not in used and not SLIM_NOT_WEIGHTS.search(n)
              and not (not aux and n.startswith(f'{scope}/AuxLogits/'))]
  if leftover:
    raise ConversionError(f'{len(leftover)} variables of {checkpoint} fit no variable of '
                          f'{model_name}: {", ".join(sorted(leftover))}')
  return layout.variables('TF-slim')

