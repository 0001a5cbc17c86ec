"""timm's `inception_v4`, `inception_resnet_v2` and `inception_v3` -> our variables.

timm's module names are translated to our blocks (`TIMM_BLOCKS`); inside a block, units are matched
in order. Neither timm nor torch is needed, except torch to read `.pth` files.
"""

from __future__ import annotations

import collections
import functools
import gzip
import json
import os
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import numpy as np

from inception_jax.errors import first_line
from inception_jax.models.layers import ConvBN
from inception_jax.models.names import AUX_LOGITS, LOGITS, lettered
from inception_jax.weights import files
from inception_jax.weights.layout import (
    ConversionError,
    FileFormatError,
    Layout,
    Path,
    convert_or_redirect,
    few,
    fits_when,
    match_counts,
    plural,
    unfit,
)

TIMM_MODELS = ('inception_v4', 'inception_resnet_v2', 'inception_v3')
# The Hugging Face Hub repositories of timm's ImageNet weights (files `model.safetensors`).
TIMM_HUB = {'inception_v4': 'timm/inception_v4.tf_in1k',
            'inception_resnet_v2': 'timm/inception_resnet_v2.tf_in1k',
            'inception_v3': 'timm/inception_v3.tv_in1k'}
# timm's state-dict names and shapes of each model, recorded from timm by
# tests/data/make_timm_layouts.py.
LAYOUTS_FILE = os.path.join(os.path.dirname(__file__), 'timm_layouts.json.gz')
# timm's names of the classifier that is our `LOGITS`.
TIMM_HEADS = {'inception_v4': 'last_linear', 'inception_resnet_v2': 'classif',
              'inception_v3': 'fc'}

V4_FEATURES = ['Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'Mixed_3a', 'Mixed_4a',
               'Mixed_5a', *lettered('Mixed_5', 4), 'Mixed_6a', *lettered('Mixed_6', 7),
               'Mixed_7a', *lettered('Mixed_7', 3)]
IRV2_MODULES = {'conv2d_1a': 'Conv2d_1a_3x3', 'conv2d_2a': 'Conv2d_2a_3x3',
                'conv2d_2b': 'Conv2d_2b_3x3', 'conv2d_3b': 'Conv2d_3b_1x1',
                'conv2d_4a': 'Conv2d_4a_3x3', 'mixed_5b': 'Mixed_5b', 'mixed_6a': 'Mixed_6a',
                'mixed_7a': 'Mixed_7a', 'block8': 'Block8', 'conv2d_7b': 'Conv2d_7b_1x1',
                TIMM_HEADS['inception_resnet_v2']: LOGITS}
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
  return ((LOGITS,), ()) if parts == [TIMM_HEADS['inception_v4']] else None


def _timm_irv2(parts):
  if parts[0] in IRV2_REPEATS and len(parts) > 1 and parts[1].isdigit():
    scope, block = IRV2_REPEATS[parts[0]]
    return (scope, f'{block}_{int(parts[1]) + 1}'), _natural(parts[2:])
  if parts[0] in IRV2_MODULES:
    return (IRV2_MODULES[parts[0]],), _natural(parts[1:])
  return None


def _timm_v3(parts):
  top = LOGITS if parts[0] == TIMM_HEADS['inception_v3'] else parts[0]
  if len(parts) > 1:
    match = re.fullmatch('(' + '|'.join(sorted(V3_BRANCHES, key=len, reverse=True)) + ')(.*)',
                         parts[1])
    if match:
      return (top,), ((V3_BRANCHES.index(match[1]), match[2]),) + _natural(parts[2:])
  return (top,), _natural(parts[1:])


# Per model: timm's module name, split at dots -> (our block, the sort key of the module inside
# the block), or None for a module that is not ours.
TIMM_BLOCKS: dict[str, Callable] = {'inception_v4': _timm_v4, 'inception_resnet_v2': _timm_irv2,
                                    'inception_v3': _timm_v3}


class _Unit(NamedTuple):
  """One layer of timm's inside one of our blocks."""
  order: tuple  # its place in the block (`TIMM_BLOCKS`' sort key)
  module: str  # timm's module name, for messages
  tensors: dict[str, str]  # our leaf name ('kernel', 'bias', 'scale', 'mean', 'var') -> timm's key


# Per kind of layer (ConvBN, nn.Conv, nn.Dense), per block of ours: timm's units in that block.
_Units = dict[type, dict[Path, list[_Unit]]]


def _block_of(path: Path) -> Path:
  return path[:2] if path[0].startswith('Repeat') else path[:1]


def read_state_dict(path: str) -> dict[str, Any]:
  """A timm state dict from a `.safetensors` file (numpy arrays; no torch needed) or a
  `.pth`/`.bin` file (torch tensors). Another kind of file is a `FileFormatError` naming the source
  that reads it."""
  found = files.file_format(path)
  if found == 'safetensors':
    # deferred: safetensors, torch and huggingface_hub are optional (timm weights only)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
      return load_file(path)
    except SafetensorError as e:
      raise FileFormatError(f'{path} is not a valid .safetensors file ({e}).') from None
  if found != 'torch':
    raise files.wrong_format(path, found, "a timm state dict (.safetensors or PyTorch's .pth)")
  try:
    # deferred: torch is optional (.pth files only)
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


def _numpy_state(state_dict_or_path: Any) -> dict[str, np.ndarray]:
  """The state dict as numpy arrays (torch tensors as float32), without BatchNorm's
  `num_batches_tracked` counters, which are not weights."""
  state = state_dict_or_path
  if isinstance(state, (str, os.PathLike)):
    state = read_state_dict(os.fspath(state))
  return {k: np.asarray(v.float().numpy() if hasattr(v, 'float') else v) for k, v in state.items()
          if not k.endswith('.num_batches_tracked')}


def _layer_at(state: Mapping[str, np.ndarray],
              key: str) -> Optional[tuple[type, str, dict[str, str]]]:
  """(kind, module, tensors) of the layer whose kernel is `key`: a conv-BN unit (`<module>.conv`
  beside `<module>.bn`), or a convolution or dense layer with a bias; None for other tensors."""
  prefix, _, leaf = key.rpartition('.')
  if leaf != 'weight':
    return None
  if prefix.endswith('.conv'):
    module = prefix[:-len('.conv')]
    if f'{module}.bn.running_mean' in state:
      return ConvBN, module, {'kernel': key, 'scale': f'{module}.bn.weight',
                              'bias': f'{module}.bn.bias', 'mean': f'{module}.bn.running_mean',
                              'var': f'{module}.bn.running_var'}
  if f'{prefix}.bias' in state and state[key].ndim in (2, 4):
    kind = nn.Conv if state[key].ndim == 4 else nn.Dense
    return kind, prefix, {'kernel': key, 'bias': f'{prefix}.bias'}
  return None


def _group_units(state: Mapping[str, np.ndarray], model_name: str) -> _Units:
  """timm's layers, grouped by kind and by our block; every tensor must belong to one."""
  units = {ConvBN: collections.defaultdict(list), nn.Conv: collections.defaultdict(list),
           nn.Dense: collections.defaultdict(list)}
  used: set[str] = set()
  for key in state:
    layer = None if key in used else _layer_at(state, key)
    if layer is None:
      continue
    kind, module, tensors = layer
    located = TIMM_BLOCKS[model_name](module.split('.'))
    if located is None or any(n not in state for n in tensors.values()):
      continue
    block, order = located
    units[kind][block].append(_Unit(order, module, tensors))
    used.update(tensors.values())
  leftover = [k for k in state if k not in used]
  if leftover:
    raise unfit(f'Tensors of the state dict that fit no layer of {model_name} ({len(leftover):,})',
                leftover)
  return units


def _fill(layout: Layout, units: _Units, state: Mapping[str, np.ndarray]) -> None:
  """Puts each block's units into our layers of that block, both in order; PyTorch's kernels
  (out, in, h, w) and (out, in) become our (h, w, in, out) and (in, out)."""
  for kind, by_block in units.items():
    ours = collections.defaultdict(list)
    for path in layout.units[kind]:
      ours[_block_of(path)].append(path)
    for block in sorted(set(ours) | set(by_block)):
      theirs = sorted(by_block.get(block, []), key=lambda u: u.order)
      match_counts(f'{"/".join(block)}: {kind.__name__} layers', ours[block], theirs, 'timm')
      for path, unit in zip(ours[block], theirs):
        values = {leaf: state[key] for leaf, key in unit.tensors.items()}
        kernel = values.pop('kernel')
        kernel = kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel.T
        if kind is ConvBN:
          layout.put_unit(path, kernel, values, unit.module)
        else:
          layout.put_biased(path, kernel, values['bias'], unit.module)


def _convert(state: Mapping[str, np.ndarray], model_name: str) -> dict[str, Any]:
  units = _group_units(state, model_name)
  heads = units[nn.Dense].get((LOGITS,))
  if not heads:
    raise ConversionError(f'No classifier in the state dict (timm calls it '
                          f'{TIMM_HEADS[model_name]}).')
  num_classes = state[heads[0].tensors['kernel']].shape[0]
  layout = Layout(model_name, num_classes=num_classes, bn_scale=True,
                  aux_logits=(AUX_LOGITS,) in units[ConvBN])
  _fill(layout, units, state)
  return layout.variables('timm')


def from_timm(state_dict_or_path: Any, model_name: str) -> dict[str, Any]:
  """timm `inception_v4` / `inception_resnet_v2` / `inception_v3` weights -> our variables.

  Takes a mapping of names to arrays (numpy or torch) or a `.safetensors` / `.pth` path. timm keeps
  BatchNorm's gamma, so the result fits `create(model_name, bn_scale=True, ...)`; for
  `inception_v3` also `avg_pool_include_pad=True` (timm's v3 pools count padding). The options are
  `options_from_variables(variables, model_name, 'timm')`. Weights of another of timm's models are a
  `ConversionError` naming it (its `fits`).
  """
  state = _numpy_state(state_dict_or_path)
  # Our arrays are views of the state's, so checking another model by converting costs little.
  return convert_or_redirect(
      lambda name: _convert(state, name), lambda name: fits_when(lambda: _convert(state, name)),
      model_name, 'timm', TIMM_MODELS,
      lambda: f'the state dict holds {plural(len(state), "tensor")} such as {few(list(state))}')


@functools.cache
def _layouts() -> dict[str, Any]:
  with gzip.open(LAYOUTS_FILE, 'rt') as f:
    return json.load(f)


def timm_layout(model_name: str) -> list[tuple[str, tuple[int, ...]]]:
  """timm's state-dict keys and shapes for `model_name`, in timm's order (recorded from timm
  1.0.31; Inception-v3 with its aux head)."""
  if model_name not in TIMM_MODELS:
    raise ConversionError(f'timm has no {model_name}; it covers {", ".join(TIMM_MODELS)}.')
  return [(key, tuple(shape)) for key, shape in _layouts()[model_name]]


def random_state_dict(model_name: str, seed: int = 0) -> dict[str, np.ndarray]:
  """A state dict in timm's exact layout for `model_name` with random values of plausible scale:
  He-scaled convolutions, BatchNorm near identity (positive variances), a small classifier. Its
  predictions mean nothing; it stands in for the real file where that cannot be downloaded."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in timm_layout(model_name):
    leaf = key.rsplit('.', 1)[-1]
    if leaf == 'num_batches_tracked':
      value = np.asarray(0, np.int64)
    elif leaf == 'running_var':
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf == 'weight' and len(shape) == 1:  # BatchNorm's gamma
      value = rng.uniform(0.8, 1.2, shape)
    elif leaf in ('bias', 'running_mean'):
      value = rng.normal(0.0, 0.1, shape)
    else:  # conv [out, in, h, w] or dense [out, in] weights
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    state[key] = value.astype(value.dtype if leaf == 'num_batches_tracked' else np.float32)
  return state


class WeightsFile(NamedTuple):
  path: str
  pretrained: bool  # False: random values in timm's layout (`random_state_dict`)
  note: str  # where the file came from, or why the real one could not be had


def pretrained_file(model_name: str, directory: str, download: bool = True) -> WeightsFile:
  """timm's ImageNet weights of `model_name` as a `.safetensors` file: downloaded from the Hugging
  Face Hub (`huggingface_hub`, cached as it caches) when `download` and that works, else a file
  of `random_state_dict` in the same layout written to `directory`, with the reason in `note`."""
  timm_layout(model_name)  # an error naming the models timm covers
  repo = TIMM_HUB[model_name]
  if download:
    try:
      # deferred: optional (timm weights only)
      from huggingface_hub import hf_hub_download
      path = hf_hub_download(repo, 'model.safetensors')
      return WeightsFile(path, True, f'timm\'s weights from huggingface.co/{repo}')
    except ImportError:
      why = 'huggingface_hub is not installed (pip install huggingface_hub)'
    except Exception as e:  # offline, or the Hub refused: any of its many errors
      why = f'{type(e).__name__}: {first_line(e, default="no message")}'
  else:
    why = 'downloading was switched off'
  # deferred: optional (timm weights only)
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{model_name}_random_timm_layout.safetensors')
  save_file(random_state_dict(model_name), path)
  return WeightsFile(path, False, f'huggingface.co/{repo} could not be downloaded ({why}): '
                     f'{path} holds RANDOM values in timm\'s layout, so the predictions below mean '
                     'nothing')
