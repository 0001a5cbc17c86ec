"""Training and evaluation: one jitted step, data-parallel over every device of every host.

`train_and_evaluate(config, workdir)` is the whole job: it validates the config
(`config_checks.py`), builds the mesh, the data source, the model and the optimizer, restores the
latest checkpoint of `workdir` (or starts from `config.init_from`), trains with periodic logging,
evaluation and checkpoints, and handles preemption (SIGTERM), Ctrl-C (both: `stopping.py`) and
non-finite losses. The step functions are in `steps.py`, the jitted job in `job.py`, the checks of
where a run starts from in `restore.py`; what the loop reports to the step watchdog of a
multi-process run, in `progress.py`.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_jax import (
  checkpoint as ckpt,
  config_checks,
  distributed,
  faults,
  lease,
  progress,
  restore,
  stopping,
  workdir as wd,
)
from inception_jax.data import create_source
from inception_jax.job import Job
from inception_jax.metrics import MetricWriter
from inception_jax.steps import (
  DIAGNOSTICS_COUNT,
  LATEST,
  TrainState,
  checkpointed,
  create_train_state,
  init_variables,
  with_diagnostics,
)

# Training batches on the devices ahead of the one being trained on (input overlaps compute).
PREFETCH = 2


class Trainer(Job):
  """What one run needs, built once from the config: data, network, optimizer, jitted steps,
  checkpoints and metric output. Use as a context manager: leaving it waits for the last save."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    config_checks.validate(config)
    config_checks.check_paths(config, workdir)
    self.workdir = workdir
    faults.set_current_workdir(workdir)
    faults.quiet_library_faults()
    # Writable: before the data and the compiles. A start that fails leaves no directory it made.
    made = faults.missing_directories(workdir) if jax.process_count() == 1 else []
    faults.check_workdir(workdir, tidy=jax.process_count() == 1)
    # One job per workdir: a second one stops here, naming the first (held until __exit__).
    self.lease = lease.for_job(workdir, jax.process_index(), jax.process_count())
    try:
      if config.init_from and wd.latest_step(workdir) is None:  # resuming ignores init_from
        restore.check_init_from_exists(config.init_from)
      super().__init__(config, create_source(
          config.dataset, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
          seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count()))
      self.checkpointer = ckpt.Checkpointer(workdir, keep=config.keep_checkpoints)
      self.writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    except BaseException:
      self._release()
      faults.remove_empty(made)
      raise
    self._timer = (time.perf_counter(), 0)

  def __enter__(self) -> 'Trainer':
    return self

  def __exit__(self, kind, error, traceback) -> None:
    unreachable = error is not None and faults.is_unreachable(error, self.workdir)
    try:
      if error is not None and (
          faults.is_disk_full(error) or unreachable or isinstance(error, KeyboardInterrupt)
          or (jax.process_count() > 1 and faults.is_peer_lost(error))):
        # Waiting for the writes in flight would fail again, wait for a lost process, or hold up
        # a Ctrl-C that asked to stop at once.
        return
      try:
        self.checkpointer.close()
        self.writer.close()
      except Exception:  # pylint: disable=broad-except
        if error is None:
          raise
        logging.exception('Closing the checkpointer after an error failed as well.')
    finally:
      self._release(give_back=not unreachable)  # unreachable: it expires by itself

  def _release(self, give_back: bool = True) -> None:
    """Gives the workdir's lease back (process 0); a failure to is logged, not raised."""
    if self.lease is not None:
      try:
        self.lease.release(give_back)
      except Exception:  # pylint: disable=broad-except  (it expires by itself)
        logging.exception('Giving back the lease of %s failed.', self.workdir)
      self.lease = None

  def pretrained_state(self, path: str) -> TrainState:
    restore.check_pretrained(path, self.config.model.name, self.model)  # before compiling
    # Merged on the host (every process computes the same values), then replicated by the jit.
    fresh = jax.device_get(jax.jit(
        lambda: init_variables(self.model, self.source.image_shape, self.config.seed))())
    variables, summary = restore.pretrained_variables(path, self.model, fresh)
    self.writer.say(summary)
    return jax.jit(functools.partial(create_train_state, tx=self.tx,
                                     diagnostic_metrics=self.diagnostics),
                   out_shardings=self.replicated)(variables)

  def start(self) -> tuple[int, TrainState]:
    """(step, state) to train from: the workdir's latest checkpoint, else `config.init_from`,
    else a fresh initialisation. Records the network in the workdir's model.json."""
    record = ckpt.ModelRecord.for_training(self.config, self.source)
    if self.checkpointer.latest_step() is not None:
      restore.check_resumable(self.workdir, ckpt.ModelRecord.read(self.workdir, step_dirs=False),
                              self.config.model.name, self.model, self.dataset_description())
    if jax.process_count() > 1:  # every process has read the old record before it is replaced
      multihost_utils.sync_global_devices('model_info_read')
    if jax.process_index() == 0:
      record.write(self.workdir)
    abstract = checkpointed(self.abstract_state())
    if jax.process_index() == 0:  # room for a checkpoint, before anything is compiled
      faults.check_room(self.workdir, sum(a.size * a.dtype.itemsize
                                          for a in jax.tree_util.tree_leaves(abstract)))
    restored = self.checkpointer.restore_latest(abstract)
    if restored is not None:
      step, state, data_state = restored
      state = jax.jit(with_diagnostics, static_argnums=1, out_shardings=self.replicated,
                      donate_argnums=0)(state, self.diagnostics)
      expected = self.source.position(step)
      if data_state != expected:
        logging.warning('The checkpoint\'s input position %s differs from %s (config changed?); '
                        'the input stream continues from step %d.', data_state, expected, step)
      self.writer.say(f'Resuming from {self.checkpointer.directory}/{step}.')
    elif self.config.init_from:
      step, state = 0, self.pretrained_state(self.config.init_from)
    else:
      step, state = 0, self.initial_state()
    # Log entries past the starting step came from a run that died before checkpointing them.
    self.writer.truncate_after(step)
    self._timer = (time.perf_counter(), step)
    return step, state

  def dataset_description(self) -> str:
    dataset = self.config.dataset
    background = ', background_class=True' if dataset.background_class else ''
    return f'config.dataset.name={dataset.name}{background}'

  def check_finite(self, state: TrainState, step: int) -> None:
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
      self.checkpointer.wait()
      last = self.checkpointer.latest_step()
      where = f'{self.checkpointer.directory}/{last}' if last is not None else 'none saved yet'
      raise FloatingPointError(
          f'Non-finite loss or gradients at step {bad} (detected at step {step}); stopping. '
          f'The last good checkpoint is {where}. Lower config.learning_rate, check the input '
          'data, or enable config.grad_clip_norm.')

  def save(self, state: TrainState, step: int) -> None:
    """Checkpoints `state` (never a non-finite one) with the input position after `step`."""
    self.check_finite(state, step)  # waits for the step: not yet 'saving' for the watchdog
    with progress.current().busy('saving'):
      self.checkpointer.save(step, checkpointed(state), self.source.position(step))

  def log(self, state: TrainState, step: int) -> TrainState:
    """Writes the means of the metrics since the last log line (the learning rate: its value at
    `step`; the diagnostics: since the last log line or resume); returns `state` with the sums
    reset."""
    self.check_finite(state, step)
    sums = jax.device_get(state.metric_sums)
    means = {}
    for key, value in sums.items():
      count = sums[DIAGNOSTICS_COUNT] if key in self.diagnostics else sums['count']
      if key not in ('count', DIAGNOSTICS_COUNT) and count:
        means[key] = float(value if key in LATEST else value / count)
    elapsed, steps = time.perf_counter() - self._timer[0], step - self._timer[1]
    self._timer = (time.perf_counter(), step)
    means['epoch'] = step / self.steps_per_epoch
    self.writer.progress(step, self.num_steps, means, steps * self.config.batch_size / elapsed,
                         elapsed / steps * (self.num_steps - step))
    return self.reset_metrics(state)

  def evaluated(self, step: int) -> bool:
    """Whether metrics.jsonl holds the eval of `step` (process 0 reads it; all agree)."""
    found = np.array(jax.process_index() == 0 and self.writer.has_eval(step))
    if jax.process_count() > 1:
      found = multihost_utils.broadcast_one_to_all(found)
    return bool(found)

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.data_sharding, v)
            for k, v in local.items()}

  def device_batches(self, start_step: int, ahead: int = PREFETCH
                     ) -> Iterator[dict[str, jax.Array]]:
    """Global training batches, transferred `ahead` steps early so input overlaps compute."""
    queue = collections.deque()
    for local in self.source.train_batches(start_step):
      queue.append(self.global_batch(local))
      if len(queue) > ahead:
        yield queue.popleft()

  def evaluate(self, state: TrainState, step: int) -> dict[str, float]:
    """Evaluates the averaged (and, with an average, the raw) parameters in one pass over the
    eval split (each image decoded once); writes the results."""
    variants = {'': state.ema_params}
    if self.config.ema_decay:  # without an average, ema_params are the raw parameters
      variants['raw_'] = state.params
    sums = dict.fromkeys(variants)
    for batch in self.source.eval_batches():
      batch = self.global_batch(batch)
      for prefix, params in variants.items():
        out = self.eval_step(params, state.batch_stats, batch)
        sums[prefix] = out if sums[prefix] is None else jax.tree_util.tree_map(
            jnp.add, sums[prefix], out)
    results = {}
    for prefix, total in jax.device_get(sums).items():
      count = float(total['count'])
      results.update({f'eval_{prefix}{k}': float(total[k]) / count
                      for k in ('loss', 'top1', 'top5')})
    results['eval_examples'] = int(count)
    self.writer.write(step, {**results, 'epoch': step / self.steps_per_epoch})
    return results


def due(step: int, every: int, last: int) -> bool:
  return step % every == 0 or step == last


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the final eval.

  A full disk or a lost process raises a `faults.Fault` that says what happened and that rerunning
  resumes (`main` prints it and exits with status 75); what was saved before is kept."""
  try:
    return _train_and_evaluate(config, workdir)
  except faults.Fault:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if faults.is_disk_full(e):
      raise faults.disk_full(e, workdir) from e
    if faults.is_unreachable(e, workdir):
      raise faults.unreachable(e, workdir) from e
    if jax.process_count() > 1 and faults.is_peer_lost(e):
      raise distributed.peer_lost(e) from e
    raise


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  stopped = None
  with Trainer(config, workdir) as trainer:
    # What the step watchdog of a multi-process run sees (distributed.PeerWatch).
    watch = progress.start(min(trainer.every['log'], trainer.every['checkpoint']))
    start, state = trainer.start()
    num_steps, last_eval = trainer.num_steps, {}
    trainer.writer.say(
        f'Training {config.model.name} on {config.dataset.name}: {num_steps} steps '
        f'({trainer.steps_per_epoch} per epoch) at global batch {config.batch_size} on '
        f'{jax.device_count()} device(s), {jax.process_count()} process(es).')
    if start >= num_steps:
      trainer.writer.say(f'{workdir} is already trained to step {start}; evaluating.')
      last_eval = trainer.evaluate(state, start)
    elif start and due(start, trainer.every['eval'], num_steps) and not trainer.evaluated(start):
      last_eval = trainer.evaluate(state, start)  # the run that saved `start` died evaluating it
    batches = trainer.device_batches(start)
    with stopping.StopWatcher(workdir) as stop:
      for step in range(start + 1, num_steps + 1):
        state = trainer.train_step(state, next(batches))
        watch.stepped(step)
        trainer.checkpointer.poll()  # a fault's message then names the newest finished save
        if stop.should_stop(step):
          if due(step, trainer.every['log'], num_steps):  # the row would be lost: the run
            state = trainer.log(state, step)  # resumes after this step
          trainer.save(state, step)
          with watch.busy('saving'):
            trainer.checkpointer.wait()
          stopped = stop.stopped(f'{trainer.checkpointer.directory}/{step}')
          if not stop.interrupted:
            trainer.writer.say(stopped)
          break
        if due(step, trainer.every['log'], num_steps):
          state = trainer.log(state, step)
        if due(step, trainer.every['checkpoint'], num_steps):
          trainer.save(state, step)
        if due(step, trainer.every['eval'], num_steps):
          with watch.busy('evaluating'):
            last_eval = trainer.evaluate(state, step)
      watch.finish()
  if stop.interrupted and stopped:
    raise stopping.Interrupted(stopped)  # after closing the checkpointer and the logs
  return last_eval
