"""Training and evaluation: one jitted step, data-parallel over every device of every host.

`train_and_evaluate(config, workdir)` is the whole job: it validates the config, builds the mesh,
the data source, the model and the optimizer, restores the latest checkpoint of `workdir` (or starts
from `config.init_from`), trains with periodic logging, evaluation and checkpoints, and handles
preemption (SIGTERM) and non-finite losses.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import signal
import time
from typing import Any, Iterator

from absl import logging
import flax
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from inception_jax import checkpoint as ckpt
from inception_jax import optim
from inception_jax.data import create_source
from inception_jax.metrics import MetricWriter
from inception_jax.models import create, model_class, stack_blocks, unstack_blocks
from inception_jax.models.scan import SEPARATOR
# Re-exported: the training job's step functions live in steps.py (no TensorFlow there).
from inception_jax.steps import (METRICS, TrainState, create_train_state, eval_step,
                                 init_variables, options_from_config, train_step)


def model_info(config: ml_collections.ConfigDict, source) -> dict[str, Any]:
  """What `inception_jax.predict` needs to rebuild the network of a workdir (see checkpoint)."""
  options = options_from_config(config, source.num_classes)
  return {'model': config.model.name, 'options': json.loads(json.dumps(options, default=str)),
          'image_size': source.image_shape[0], 'classes': source.classes,
          'source': f'trained on {config.dataset.name}'}


# Model options that change the train state's tree or shapes: checkpoints restore only under the same.
STATE_OPTIONS = ('scan_blocks', 'aux_logits', 'bn_scale', 'depth_multiplier', 'repeats')


def option_fixes(recorded: dict[str, Any], current: dict[str, Any], keys) -> list[str]:
  """`model.KEY=VALUE` for each of `keys` whose value in a model.json record's options differs
  from the current one: the config fields to set."""
  fixes = []
  for key in keys:
    if key in recorded and recorded[key] != current.get(key):
      value = tuple(recorded[key]) if isinstance(recorded[key], list) else recorded[key]
      fixes.append(f'model.{key}={value}')
  return fixes


def check_resumable(workdir: str, saved: dict[str, Any] | None, info: dict[str, Any]) -> None:
  """Fails, naming the flags to pass, when the workdir's checkpoints hold another network than the
  config builds (`saved` and `info`: the workdir's model.json and this run's). Without this the
  restore fails on every checkpoint, which would be set aside as unreadable."""
  if not saved:
    return
  fixes = [] if saved.get('model') == info['model'] else [f'model.name={saved.get("model")}']
  fixes += option_fixes(saved.get('options', {}), info['options'], STATE_OPTIONS)
  if fixes:
    flags = ' '.join(f"'--config.{fix}'" if ' ' in fix else f'--config.{fix}' for fix in fixes)
    raise ValueError(f'{workdir} holds checkpoints of another network than this config builds; '
                     f'resume with {flags}, or train in a new workdir.')


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps is not None:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch))


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails before any compute, naming the field to fix."""
  devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    if value <= 0 or value % devices:
      raise ValueError(f'config.{field}={value} must be a positive multiple of the {devices} '
                       f'devices ({jax.process_count()} process(es)) it is split over.')
  model_class(config.model.name)
  for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if config[field] <= 0:
      raise ValueError(f'config.{field}={config[field]} must be positive.')
  if config.num_train_steps is None and config.num_epochs <= 0:
    raise ValueError('Set config.num_train_steps or a positive config.num_epochs.')


def merge_pretrained(variables, loaded, model: nn.Module):
  """`variables` with every tensor of `loaded` whose name and shape match.

  The classifier (and aux classifier) is kept freshly initialised when its width differs (a new
  `num_classes`); any other mismatch, missing or leftover tensor is an error naming it.
  """
  loaded = unstack_blocks(loaded)
  if any(SEPARATOR in k for k in flax.traverse_util.flatten_dict(variables, sep='/')):
    loaded = stack_blocks(loaded, variables)
  flat_target = flax.traverse_util.flatten_dict(variables, sep='/')
  flat_loaded = flax.traverse_util.flatten_dict(loaded, sep='/')
  heads = ('params/Logits/', f'params/AuxLogits/{model.aux_names[1]}/')
  merged, problems, reinitialised = {}, [], []
  for name, value in flat_target.items():
    if name not in flat_loaded:
      if name.startswith('params/AuxLogits/') or name.startswith('batch_stats/AuxLogits/'):
        merged[name] = value
        continue
      problems.append(f'missing in checkpoint: {name} {tuple(value.shape)}')
      continue
    found = np.shape(flat_loaded[name])
    if found != tuple(value.shape):
      if name.startswith(heads):
        merged[name] = value
        reinitialised.append(name)
        continue
      problems.append(f'shape mismatch: {name} expects {tuple(value.shape)}, found {found}')
      continue
    merged[name] = np.asarray(flat_loaded[name], value.dtype)
  leftover = [n for n in flat_loaded if n not in flat_target and '/AuxLogits/' not in f'/{n}']
  problems += [f'not used by the model: {n}' for n in leftover]
  if problems:
    raise ValueError('config.init_from does not fit the model:\n  ' + '\n  '.join(problems))
  if reinitialised:
    logging.info('Re-initialised the classifier for the new num_classes: %s', reinitialised)
  return flax.traverse_util.unflatten_dict(merged, sep='/')


class Trainer:
  """Everything the loop needs, built once from the config."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate(config)
    self.config, self.workdir = config, workdir
    self.source = create_source(config.dataset, batch_size=config.batch_size,
                                eval_batch_size=config.eval_batch_size, seed=config.seed,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    self.model = create(config.model.name, **options_from_config(config, self.source.num_classes))
    self.model.check_input((1, *self.source.image_shape))
    self.steps_per_epoch = self.source.steps_per_epoch
    self.num_steps = total_steps(config, self.steps_per_epoch)
    self.schedule = optim.learning_rate_schedule(config, self.steps_per_epoch)
    self.tx = optim.make_optimizer(config, self.schedule)

    mesh = jax.make_mesh((jax.device_count(),), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(mesh, P())
    self.data_sharding = NamedSharding(mesh, P('data'))
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model, tx=self.tx, schedule=self.schedule,
                          config=config),
        in_shardings=(self.replicated, self.data_sharding), out_shardings=self.replicated,
        donate_argnums=0)
    self.reset_metrics = jax.jit(TrainState.reset_metrics, out_shardings=self.replicated,
                                 donate_argnums=0)
    self.eval_step = jax.jit(functools.partial(eval_step, model=self.model),
                             in_shardings=(self.replicated, self.replicated, self.data_sharding),
                             out_shardings=self.replicated)

  def initial_state(self) -> TrainState:
    def init(seed):
      return create_train_state(init_variables(self.model, self.source.image_shape, seed), self.tx)
    return jax.jit(init, static_argnums=0, out_shardings=self.replicated)(self.config.seed)

  def check_pretrained_info(self, path: str) -> None:
    """Names the config fields to change when `path`'s record says its network differs."""
    info = ckpt.read_model_info(path)
    if info is None:
      return
    if info.get('model') not in (None, self.config.model.name):
      raise ValueError(f'config.init_from={path} holds {info["model"]} weights, but '
                       f'config.model.name is {self.config.model.name}.')
    keys = ('avg_pool_include_pad', 'bn_scale')
    fixes = option_fixes(info.get('options', {}), {k: getattr(self.model, k) for k in keys}, keys)
    if fixes:
      raise ValueError(f'config.init_from={path} was built with other model options; set '
                       f'{", ".join("config." + f for f in fixes)} (e.g. --config.{fixes[0]}).')

  def pretrained_state(self, path: str) -> TrainState:
    self.check_pretrained_info(path)
    # Merged on the host (every process computes the same values), then replicated by the jit.
    fresh = jax.device_get(jax.jit(
        lambda: init_variables(self.model, self.source.image_shape, self.config.seed))())
    variables = merge_pretrained(fresh, ckpt.load_variables(path), self.model)
    logging.info('Starting from the variables in %s', path)
    return jax.jit(functools.partial(create_train_state, tx=self.tx),
                   out_shardings=self.replicated)(variables)

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.data_sharding, v)
            for k, v in local.items()}

  def device_batches(self, start_step: int, ahead: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Global training batches, transferred `ahead` steps early so input overlaps compute."""
    queue = collections.deque()
    for local in self.source.train_batches(start_step):
      queue.append(self.global_batch(local))
      if len(queue) > ahead:
        yield queue.popleft()

  def evaluate(self, state: TrainState) -> dict[str, float]:
    results = {}
    variants = [('', state.ema_params)]
    if self.config.ema_decay:  # without an average, ema_params are the raw parameters
      variants.append(('raw_', state.params))
    for prefix, params in variants:
      sums = None
      for batch in self.source.eval_batches():
        out = self.eval_step(params, state.batch_stats, self.global_batch(batch))
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
      sums = jax.device_get(sums)
      count = float(sums['count'])
      results.update({f'eval_{prefix}loss': float(sums['loss']) / count,
                      f'eval_{prefix}top1': float(sums['top1']) / count,
                      f'eval_{prefix}top5': float(sums['top5']) / count})
    results['eval_examples'] = int(count)
    return results


class PreemptionWatcher:
  """Turns SIGTERM into a request to checkpoint at the next step boundary (all hosts agree)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multihost = jax.process_count() > 1

  def __enter__(self):
    if not self._multihost:  # with several hosts, JAX's preemption service handles SIGTERM
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the final eval."""
  trainer = Trainer(config, workdir)
  checkpointer = ckpt.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  abstract = jax.eval_shape(trainer.initial_state)
  abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=trainer.replicated), abstract)
  info = model_info(config, trainer.source)
  if checkpointer.latest_step() is not None:
    check_resumable(workdir, ckpt.read_model_info(workdir, step_dirs=False), info)
  if jax.process_count() > 1:  # every process has read the old record before it is replaced
    multihost_utils.sync_global_devices('model_info_read')
  if jax.process_index() == 0:
    ckpt.write_model_info(workdir, info)
  restored = checkpointer.restore_latest(abstract)
  if restored is not None:
    start, state, data_state = restored
    expected = trainer.source.position(start)
    if data_state != expected:
      logging.warning('The checkpoint\'s input position %s differs from %s (config changed?); '
                      'the input stream continues from step %d.', data_state, expected, start)
    writer.say(f'Resuming from {checkpointer.directory}/{start}.')
  elif config.init_from:
    start, state = 0, trainer.pretrained_state(config.init_from)
  else:
    start, state = 0, trainer.initial_state()

  # Log entries past the starting step came from a run that died before checkpointing them.
  writer.truncate_after(start)
  num_steps = trainer.num_steps
  writer.say(f'Training {config.model.name} on {config.dataset.name}: {num_steps} steps '
             f'({trainer.steps_per_epoch} per epoch) at global batch {config.batch_size} on '
             f'{jax.device_count()} device(s), {jax.process_count()} process(es).')
  last_eval: dict[str, float] = {}

  def check_finite(step: int) -> None:
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
      checkpointer.wait()
      last = checkpointer.latest_step()
      where = f'{checkpointer.directory}/{last}' if last is not None else 'none saved yet'
      raise FloatingPointError(
          f'Non-finite loss or gradients at step {bad} (detected at step {step}); stopping. '
          f'The last good checkpoint is {where}. Lower config.learning_rate, check the input '
          'data, or enable config.grad_clip_norm.')

  def save(step: int) -> None:
    check_finite(step)
    checkpointer.save(step, state, trainer.source.position(step))

  batches = trainer.device_batches(start)
  timer = (time.perf_counter(), start)
  if start >= num_steps:
    writer.say(f'{workdir} is already trained to step {start}; evaluating.')
    last_eval = trainer.evaluate(state)
    writer.write(start, last_eval)
  try:
    with PreemptionWatcher() as preemption:
      for step in range(start, num_steps):
        state = trainer.train_step(state, next(batches))
        done = step + 1
        if preemption.should_stop(done):
          save(done)
          checkpointer.wait()
          writer.say(f'Preempted: saved {checkpointer.directory}/{done}; exiting. Rerun the same '
                     'command to resume.')
          break
        if done % config.log_every_steps == 0 or done == num_steps:
          check_finite(done)
          sums = jax.device_get(state.metric_sums)
          means = {k: float(sums[k] / sums['count']) for k in METRICS if k != 'count'}
          state = trainer.reset_metrics(state)
          elapsed, steps = time.perf_counter() - timer[0], done - timer[1]
          timer = (time.perf_counter(), done)
          writer.progress(done, num_steps, means, steps * config.batch_size / elapsed,
                          elapsed / steps * (num_steps - done))
        if done % config.checkpoint_every_steps == 0 or done == num_steps:
          save(done)
        if done % config.eval_every_steps == 0 or done == num_steps:
          last_eval = trainer.evaluate(state)
          writer.write(done, last_eval)
  finally:
    checkpointer.close()
    writer.close()
  return last_eval
