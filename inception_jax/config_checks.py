"""The training job's settings checked before anything is computed: required fields, batch sizes
against the devices, the intervals of logs, evaluations and checkpoints, the fields whose values
form an interval (`RANGES`), the image size against the network, and the paths (`check_paths`).
Each failure names the field to fix (`errors.ConfigError`)."""

from __future__ import annotations

import math
import re
from typing import Sequence

import jax
import ml_collections
import numpy as np

from inception_jax import workdir as wd
from inception_jax.errors import ConfigError
from inception_jax.models import model_class


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
  for field, (interval, hint) in RANGES.items():
    value = _field(config, field)
    if value is not None and not in_interval(value, interval):
      raise ConfigError(f'config.{field}={value} must be in {interval}'
                        + (f' ({hint}).' if hint else '.'))
  scale = config.model.get('residual_scale')
  if scale is not None and any(s < 0 for s in np.ravel(np.asarray(scale, dtype=float))):
    raise ConfigError(f'config.model.residual_scale={scale} must not be negative (the paper '
                      'scales residuals by 0.1 to 0.3; 1 adds them unscaled).')
  size = config.dataset.image_size
  if not config.model.get('small_inputs') and size < cls.min_size:
    raise ConfigError(f'config.dataset.image_size={size} is below the {cls.min_size} pixels '
                      f'{config.model.name} needs; raise it (pretrained: {cls.default_size}) or '
                      'set config.model.small_inputs=True for small images such as CIFAR-10.')


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


def _ranges(table: str) -> dict[str, tuple[str, str]]:
  """{field: (interval, hint)} from lines 'field  interval  hint'."""
  rows = [re.match(r'(\S+)\s+([(\[].*?[)\]])\s*(.*)', line) for line in table.strip().splitlines()]
  return {row[1]: (row[2], row[3]) for row in rows}


def in_interval(value: float, interval: str) -> bool:
  """Whether `value` lies in `interval`, written '(0, 1]', '[0, inf)' and so on."""
  low, high = (float(x) for x in interval[1:-1].split(','))
  above = value > low if interval[0] == '(' else value >= low
  below = value < high if interval[-1] == ')' else value <= high
  return above and below


# Fields whose sensible values form an interval, and what to set (checked by `validate`).
RANGES = _ranges("""
learning_rate           (0, inf)  the paper: 0.045 at batch 256
reference_batch_size    (0, inf)
model.dropout_keep      (0, 1]    the keep probability; the paper: 0.8, 1 disables dropout
model.depth_multiplier  (0, inf)  1.0: the paper's widths
model.bn_momentum       [0, 1)    TF-slim: 0.9997
lr_decay_rate           (0, 1]    the paper: 0.94
lr_decay_epochs         (0, inf)  the paper: 2
warmup_epochs           [0, inf)
rmsprop_decay           [0, 1)    the paper: 0.9
rmsprop_momentum        [0, 1)    TF-slim: 0.9
rmsprop_epsilon         (0, inf)  the paper: 1.0
grad_clip_norm          [0, inf)  0 disables clipping
weight_decay            [0, inf)
label_smoothing         [0, 1)    the Inception-v3 paper: 0.1
aux_loss_weight         [0, inf)
ema_decay               [0, 1)    0 evaluates the raw parameters
keep_checkpoints        [1, inf)
num_train_steps         [1, inf)  or unset it to train config.num_epochs
dataset.min_crop_area   (0, 1]    a fraction of the image area
dataset.max_image_pixels  (0, inf)  folder:PATH skips larger images; default 89,478,485
""")


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
