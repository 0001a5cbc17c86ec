"""What the three converters share: our network's variables and layer order (`Layout`), which they
fill shape-checked, and the errors and options that describe the result."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import numpy as np

from inception_jax.models import create
from inception_jax.models.layers import ConvBN
from inception_jax.models.names import AUX_LOGITS, LOGITS
from inception_jax.models.summary import abstract_variables

Path = tuple[str, ...]


class ConversionError(ValueError):
  """Weights that do not fit the model. The message names a handful of tensors at most: `names`
  holds all those it is about, and `fits` the source's other models that the weights do fit."""

  def __init__(self, message: str, names: Sequence[str] = (), fits: Sequence[str] = ()):
    super().__init__(message)
    self.names = list(names)
    self.fits = tuple(fits)


class FileFormatError(ConversionError):
  """An input that the source cannot read as given: another source's file (`source` names that
  source), a damaged file, a directory of several checkpoints."""

  def __init__(self, message: str, source: Optional[str] = None):
    super().__init__(message)
    self.source = source


def few(names: Sequence[str], limit: int = 3) -> str:
  """The first `limit` of `names`, and how many more there are: 'a, b, c and 1,099 more'."""
  shown = ', '.join(names[:limit])
  return shown if len(names) <= limit else f'{shown} and {len(names) - limit:,} more'


def plural(count: int, noun: str) -> str:
  """'1 tensor', '1,102 tensors'."""
  return f'{count:,} {noun}' + ('' if count == 1 else 's')


def unfit(problem: str, names: Sequence[str]) -> ConversionError:
  """A `ConversionError` about `names`: `problem` and a few of them."""
  return ConversionError(f'{problem}: {few(names)}.', names)


def fits_when(convert: Callable[[], Any]) -> bool:
  """Whether `convert()` runs without a `ConversionError`."""
  try:
    convert()
  except ConversionError:
    return False
  return True


def convert_or_redirect(convert: Callable[[str], Any], fits: Callable[[str], bool],
                        model_name: str, source: str, models: Sequence[str],
                        found: Callable[[], str]) -> Any:
  """`convert(model_name)` for one of `source`'s `models`. When the weights do not fit it, the
  `ConversionError` also names the other models that they fit (`fits(name)`), or when none does,
  says what they hold (`found()`, e.g. 'the state dict holds 57 tensors such as a, b, c')."""
  try:
    if model_name not in models:
      raise ConversionError(f'{source} has no {model_name}; it covers {", ".join(models)}.')
    return convert(model_name)
  except ConversionError as e:
    others = tuple(m for m in models if m != model_name and fits(m))
    hint = (f'They fit {" and ".join(others)}.' if others else
            f'They fit no {source} model ({", ".join(models)}): {found()}.')
    raise ConversionError(f'{e} {hint}', e.names, others) from None


def options_from_variables(variables: Mapping[str, Any], model_name: str,
                           source: str) -> dict[str, Any]:
  """The `create(model_name, ...)` options under which `variables` converted from `source`
  ('keras', 'timm' or 'slim') fit and compute what the source computes: classifier width, aux
  head, BatchNorm gamma, and for timm's Inception-v3 average pools that count padding."""
  params = variables['params']
  options = {'num_classes': int(np.shape(params[LOGITS]['bias'])[0]),
             'aux_logits': AUX_LOGITS in params,
             'bn_scale': 'scale' in params['Conv2d_1a_3x3']['BatchNorm']}
  if source == 'timm' and model_name == 'inception_v3':
    options['avg_pool_include_pad'] = True
  return options


class Layout:
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

  def put_biased(self, path: Path, kernel: Any, bias: Any, source_name: str = ''):
    """One layer with a bias and no BatchNorm: a biased convolution or a dense layer."""
    self.put(path + ('kernel',), kernel, source_name)
    self.put(path + ('bias',), bias, source_name)

  def variables(self, source: str) -> dict[str, Any]:
    missing = [p for p in self.params if p not in self.out_params]
    missing += [p for p in self.stats if p not in self.out_stats]
    if missing:
      raise unfit(f'Variables of the model that {source} does not fill ({len(missing):,})',
                  ['/'.join(p) for p in missing])
    return {'params': flax.traverse_util.unflatten_dict(self.out_params),
            'batch_stats': flax.traverse_util.unflatten_dict(self.out_stats)}


def match_counts(what: str, ours: Sequence, theirs: Sequence, source: str) -> None:
  if len(ours) != len(theirs):
    raise ConversionError(f'{what}: the model has {len(ours)}, {source} has {len(theirs)}.')
