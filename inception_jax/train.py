"""Training and evaluation: one jitted step, data-parallel over every device of every host.

`train_and_evaluate(config, workdir)` is the whole job: `Job` builds the mesh, data source, model,
optimizer and jitted steps; `start.py` checks the start and picks it (resume, `config.init_from`
or fresh); the loop trains with periodic logs, evaluations and checkpoints, and handles preemption
(SIGTERM), Ctrl-C (both: `stopping.py`), non-finite losses and faults (`faults.py`)."""

from __future__ import annotations

import collections
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
  distributed,
  faults,
  lease,
  progress,
  start as starting,
  stopping,
)
from inception_jax.config_checks import due
from inception_jax.data import create_source
from inception_jax.job import Job
from inception_jax.metrics import MetricWriter
from inception_jax.steps import DIAGNOSTICS_COUNT, LATEST, TrainState, checkpointed

# Training batches on the devices ahead of the one being trained on (input overlaps compute).
PREFETCH = 2


class Trainer:
  """What one run needs, built once from the config: its `job` (data, network, optimizer, jitted
  steps), checkpoints and metric output. Use as a context manager: leaving it waits for the last
  save."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    made = starting.check_start(config, workdir)
    self.workdir = workdir
    # One job per workdir: a second one stops here, naming the first (held until __exit__).
    self.lease = lease.for_job(workdir, jax.process_index(), jax.process_count())
    try:
      config, self.taken = starting.recorded_options(config, workdir)
      self.config = config
      self.job = Job(config, create_source(
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

  def start(self) -> tuple[int, TrainState]:
    """(step, state) to train from (`start.choose_start`), saying where it starts from."""
    step, state, line = starting.choose_start(self.job, self.checkpointer, self.workdir,
                                              self.taken)
    if line:
      self.writer.say(line)
    # Log entries past the starting step came from a run that died before checkpointing them.
    self.writer.truncate_after(step)
    self._timer = (time.perf_counter(), step)
    return step, state

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
      self.checkpointer.save(step, checkpointed(state), self.job.source.position(step))

  def log(self, state: TrainState, step: int) -> TrainState:
    """Writes the means of the metrics since the last log line (the learning rate: its value at
    `step`; the diagnostics: since the last log line or resume); returns `state` with the sums
    reset."""
    self.check_finite(state, step)
    sums = jax.device_get(state.metric_sums)
    means = {}
    for key, value in sums.items():
      count = sums[DIAGNOSTICS_COUNT] if key in self.job.diagnostics else sums['count']
      if key not in ('count', DIAGNOSTICS_COUNT) and count:
        means[key] = float(value if key in LATEST else value / count)
    elapsed, steps = time.perf_counter() - self._timer[0], step - self._timer[1]
    self._timer = (time.perf_counter(), step)
    means['epoch'] = step / self.job.steps_per_epoch
    self.writer.progress(step, self.job.num_steps, means, steps * self.config.batch_size / elapsed,
                         elapsed / steps * (self.job.num_steps - step))
    return self.job.reset_metrics(state)

  def evaluated(self, step: int) -> bool:
    """Whether metrics.jsonl holds the eval of `step` (process 0 reads it; all agree)."""
    found = np.array(jax.process_index() == 0 and self.writer.has_eval(step))
    if jax.process_count() > 1:
      found = multihost_utils.broadcast_one_to_all(found)
    return bool(found)

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.job.data_sharding, v)
            for k, v in local.items()}

  def device_batches(self, start_step: int, ahead: int = PREFETCH
                     ) -> Iterator[dict[str, jax.Array]]:
    """Global training batches, transferred `ahead` steps early so input overlaps compute."""
    queue = collections.deque()
    for local in self.job.source.train_batches(start_step):
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
    for batch in self.job.source.eval_batches():
      batch = self.global_batch(batch)
      for prefix, params in variants.items():
        out = self.job.eval_step(params, state.batch_stats, batch)
        sums[prefix] = out if sums[prefix] is None else jax.tree_util.tree_map(
            jnp.add, sums[prefix], out)
    results = {}
    for prefix, total in jax.device_get(sums).items():
      count = float(total['count'])
      results.update({f'eval_{prefix}{k}': float(total[k]) / count
                      for k in ('loss', 'top1', 'top5')})
    results['eval_examples'] = int(count)
    self.writer.write(step, {**results, 'epoch': step / self.job.steps_per_epoch})
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the final eval.

  A full disk or a lost process raises a `faults.Fault` that says what happened and that rerunning
  resumes (`main` prints it and exits with status 75); what was saved before is kept."""
  try:
    return _train_and_evaluate(config, workdir)
  except faults.Fault:
    raise
  except Exception as e:  # pylint: disable=broad-except
    fault = (faults.disk_full(e, workdir) if faults.is_disk_full(e)
             else faults.unreachable(e, workdir) if faults.is_unreachable(e, workdir)
             else distributed.peer_lost(e) if jax.process_count() > 1 and faults.is_peer_lost(e)
             else None)
    if fault is None:
      raise
    raise fault from e


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  stopped = None
  with Trainer(config, workdir) as trainer:
    job = trainer.job
    # What the step watchdog of a multi-process run sees (distributed.PeerWatch).
    watch = progress.start(min(job.every['log'], job.every['checkpoint']))
    start, state = trainer.start()
    num_steps, last_eval = job.num_steps, {}
    trainer.writer.say(
        f'Training {config.model.name} on {config.dataset.name}: {num_steps} steps '
        f'({job.steps_per_epoch} per epoch) at global batch {config.batch_size} on '
        f'{jax.device_count()} device(s), {jax.process_count()} process(es).')
    if start >= num_steps:
      trainer.writer.say(f'{workdir} is already trained to step {start}; evaluating.')
      last_eval = trainer.evaluate(state, start)
    elif start and due(start, job.every['eval'], num_steps) and not trainer.evaluated(start):
      last_eval = trainer.evaluate(state, start)  # the run that saved `start` died evaluating it
    batches = trainer.device_batches(start)
    with stopping.StopWatcher(workdir) as stop:
      for step in range(start + 1, num_steps + 1):
        state = job.train_step(state, next(batches))
        watch.stepped(step)
        trainer.checkpointer.poll()  # a fault's message then names the newest finished save
        if stop.should_stop(step):
          if due(step, job.every['log'], num_steps):  # the row would be lost: the run
            state = trainer.log(state, step)  # resumes after this step
          trainer.save(state, step)
          with watch.busy('saving'):
            trainer.checkpointer.wait()
          stopped = stop.stopped(f'{trainer.checkpointer.directory}/{step}')
          if not stop.interrupted:
            trainer.writer.say(stopped)
          break
        if due(step, job.every['log'], num_steps):
          state = trainer.log(state, step)
        if due(step, job.every['checkpoint'], num_steps):
          trainer.save(state, step)
        if due(step, job.every['eval'], num_steps):
          with watch.busy('evaluating'):
            last_eval = trainer.evaluate(state, step)
      watch.finish()
  if stop.interrupted and stopped:
    raise stopping.Interrupted(stopped)  # after closing the checkpointer and the logs
  return last_eval
