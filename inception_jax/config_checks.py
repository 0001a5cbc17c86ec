"""The training job's settings checked before anything is computed: required fields, batch sizes
against the devices, the intervals of logs, evaluations and checkpoints, the fields whose values
form an interval (`RANGES`), the image size against the network, and the paths (`check_paths`).
Each failure names the field to fix (`errors.ConfigError`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import ml_collections
import numpy as np

from inception_jax import frozen, workdir as wd
from inception_jax.errors import ConfigError
from inception_jax.models import create, model_class
from inception_jax.steps import init_variables, options_from_config


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps is not None:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch))


EVENTS = ('log', 'eval', 'checkpoint')  # what happens every so many steps (or epochs)
# What to pass for a field that a config requires (`config.required`) and the command line lacks.
REQUIRED_HINTS = {'init_from': 'DIR: a directory written by `python -m inception_jax.convert`, '
                               'or a training workdir'}


def validate(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
             ) -> None:
  """Fails before any compute, naming the field to fix. `devices`: those the job runs on (default:
  all of them)."""
  for field in config.get('required', ()):
    if config[field] is None:
      raise ConfigError(f'This config needs --config.{field}='
                        f'{REQUIRED_HINTS.get(field, "VALUE")}.')
  devices = jax.devices() if devices is None else devices
  processes = len({d.process_index for d in devices})
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    if value <= 0 or value % len(devices):
      raise ConfigError(f'config.{field}={value} must be a positive multiple of the '
                        f'{len(devices)} devices ({processes} process(es)) it is split over.')
  cls = model_class(config.model.name)
  for event in EVENTS:
    steps, epochs = config[f'{event}_every_steps'], config.get(f'{event}_every_epochs')
    if steps is None and epochs is None:
      raise ConfigError(f'Set config.{event}_every_steps or config.{event}_every_epochs.')
    if (steps if steps is not None else epochs) <= 0:
      field = f'{event}_every_steps' if steps is not None else f'{event}_every_epochs'
      raise ConfigError(f'config.{field}={config[field]} must be positive.')
  if config.num_train_steps is None and config.num_epochs <= 0:
    raise ConfigError('Set config.num_train_steps or a positive config.num_epochs.')
  for field, interval in RANGES.items():
    value = _field(config, field)
    if value is not None and value not in interval:
      raise ConfigError(f'config.{field}={value} must be in {interval}'
                        + (f' ({interval.hint}).' if interval.hint else '.'))
  scale = config.model.get('residual_scale')
  if scale is not None and any(s < 0 for s in np.ravel(np.asarray(scale, dtype=float))):
    raise ConfigError(f'config.model.residual_scale={scale} must not be negative (the paper '
                      'scales residuals by 0.1 to 0.3; 1 adds them unscaled).')
  size = config.dataset.image_size
  if not config.model.get('small_inputs') and size < cls.min_size:
    raise ConfigError(f'config.dataset.image_size={size} is below the {cls.min_size} pixels '
                      f'{config.model.name} needs; raise it (pretrained: {cls.default_size}) or '
                      'set config.model.small_inputs=True for small images such as CIFAR-10.')
  check_trainable_scopes(config)


def check_trainable_scopes(config: ml_collections.ConfigDict) -> None:
  """Fails where `config.trainable_scopes` names what the network lacks, or splits a scanned run
  of blocks (`frozen.trainable_mask`); traces the network's shapes only, computing nothing."""
  if not frozen.patterns(config.get('trainable_scopes')):
    return
  network = create(config.model.name, **options_from_config(config, num_classes=2))
  size = config.dataset.image_size
  shapes = jax.eval_shape(lambda: init_variables(network, (size, size, 3), 0))
  frozen.trainable_mask(config.trainable_scopes, shapes['params'])


def check_paths(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Fails at once, naming the flag, where a path of the job cannot work (`wd.check`)."""
  wd.check(workdir, '--workdir')
  wd.check(config.init_from, '--config.init_from')
  wd.check(config.dataset.get('data_dir'), '--config.dataset.data_dir')


def _field(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for key in dotted.split('.'):
    if key not in node:
      return None
    node = node[key]
  return node


@dataclasses.dataclass(frozen=True)
class Range:
  """The interval of a field's sensible values, shown as '(0, 1]' (open '(' or closed '['), and
  what to set (the hint of the error message)."""
  low: float
  high: float
  low_open: bool = True
  high_open: bool = True
  hint: str = ''

  def __contains__(self, value: float) -> bool:
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def __str__(self) -> str:
    return (f'{"(" if self.low_open else "["}{self.low:g}, {self.high:g}'
            f'{")" if self.high_open else "]"}')


def _positive(hint: str = '') -> Range:
  return Range(0, math.inf, hint=hint)


def _at_least(low: float, hint: str = '') -> Range:
  return Range(low, math.inf, low_open=False, hint=hint)


def _fraction(hint: str = '') -> Range:
  """(0, 1]."""
  return Range(0, 1, high_open=False, hint=hint)


def _below_one(hint: str = '') -> Range:
  """[0, 1)."""
  return Range(0, 1, low_open=False, hint=hint)


# Fields whose sensible values form an interval, and what to set (checked by `validate`).
RANGES = {
  'learning_rate': _positive('the paper: 0.045 at batch 256'),
  'reference_batch_size': _positive(),
  'model.dropout_keep': _fraction('the keep probability; the paper: 0.8, 1 disables dropout'),
  'model.depth_multiplier': _positive("1.0: the paper's widths"),
  'model.bn_momentum': _below_one('TF-slim: 0.9997'),
  'lr_decay_rate': _fraction('the paper: 0.94'),
  'lr_decay_epochs': _positive('the paper: 2'),
  'warmup_epochs': _at_least(0),
  'rmsprop_decay': _below_one('the paper: 0.9'),
  'rmsprop_momentum': _below_one('TF-slim: 0.9'),
  'rmsprop_epsilon': _positive('the paper: 1.0'),
  'grad_clip_norm': _at_least(0, '0 disables clipping'),
  'weight_decay': _at_least(0),
  'label_smoothing': _below_one('the Inception-v3 paper: 0.1'),
  'aux_loss_weight': _at_least(0),
  'ema_decay': _below_one('0 evaluates the raw parameters'),
  'keep_checkpoints': _at_least(1),
  'num_train_steps': _at_least(1, 'or unset it to train config.num_epochs'),
  'dataset.min_crop_area': _fraction('a fraction of the image area'),
  'dataset.max_image_pixels': _positive('folder:PATH skips larger images; default 89,478,485'),
}


def intervals(config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict[str, int]:
  """Steps between log lines, evaluations and checkpoints: `<event>_every_steps`, or where that is
  unset, `<event>_every_epochs` epochs (at least one step)."""
  every = {}
  for event in EVENTS:
    steps = config[f'{event}_every_steps']
    if steps is None:
      steps = max(1, round(config[f'{event}_every_epochs'] * steps_per_epoch))
    every[event] = int(steps)
  return every


def due(step: int, every: int, last: int) -> bool:
  """Whether an event that comes `every` steps comes at `step` (always at the `last` step)."""
  return step % every == 0 or step == last
