"""Compiling the training job's own train and eval steps for a target from abstract shapes, and
the report of what they hold per chip and whether it fits (`compile_job`)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Optional

from inception_jax.aot.analysis import costs, memory, nbytes, refusal
from inception_jax.aot.environment import Target, target
from inception_jax.aot.roofline import estimate


def data_source(config, devices):
  """The config's data source, or for ImageNet and CIFAR-10 a stand-in with their shapes and
  published sizes (no file opened: the data need not be on this machine)."""
  # deferred: the data modules import JAX, which must start after prepare_environment
  from inception_jax import data
  from inception_jax.data import datasets, tfds_sources
  hosts = len({d.process_index for d in devices})
  options = dict(batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                 seed=config.seed, process_index=0, process_count=hosts)
  if config.dataset.name in datasets.DATASETS:
    return tfds_sources.create(config.dataset, read=False, **options)
  return data.create_source(config.dataset, **options)


@contextlib.contextmanager
def _unsaved() -> Iterator[None]:
  """Compiles inside add nothing to JAX's persistent compilation cache: a compile-only TPU
  program cannot be loaded back from it (JAX warns on every later read), and a cached compile
  would report a compile time of nothing."""
  import jax  # deferred: JAX starts only after prepare_environment
  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float('inf'))
  try:
    yield
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', previous)


def _compile(step, *args) -> tuple[Any, float, Optional[Exception]]:
  """`step` lowered for the abstract `args` and compiled: (the compiled program or None, when the
  compile started, the error XLA raised or None)."""
  start = time.perf_counter()
  try:
    with _unsaved():
      return step.lower(*args).compile(), start, None
  except Exception as e:  # pylint: disable=broad-except  (XLA raises JaxRuntimeError)
    return None, start, e


def _seconds(start: float) -> float:
  return round(time.perf_counter() - start, 1)


def compile_job(config, topology: str | Target, *, eval_step: bool = True,
                compiled_train: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Compiles `config`'s training job for `topology` and returns the report (see the package's
  docstring); the record that --json prints. Raises ConfigError for a config that cannot run
  there (e.g. a batch that does not split over the chips). `eval_step=False` compiles the train
  step alone; `compiled_train`, a report of `eval_step=False` for this same config and topology,
  is completed with the eval step instead of compiling the train step again."""
  # deferred: inception_jax.job imports JAX, which must start after prepare_environment
  from inception_jax import config_checks, job as training_job, train
  where = target(topology) if isinstance(topology, str) else topology
  config_checks.validate(config, where.devices)
  job = training_job.Job(config, data_source(config, where.devices), where.devices)
  report = _describe_job(config, where, job)
  state = job.abstract_state()
  train_batch, eval_batch = job.abstract_batch(True), job.abstract_batch(False)
  if compiled_train is not None:
    report['train'] = dict(compiled_train['train'])
  else:
    compiled, start, error = _compile(job.train_step, state, train_batch)
    if error is not None:
      return _failed(report, error, time.perf_counter() - start)
    report['train'] = dict(memory(compiled), **costs(compiled), compile_s=_seconds(start))
  report['train_batch_bytes'] = nbytes(train_batch) // len(where.devices)  # per chip
  # While training, the chip also holds the batches transferred ahead and the eval step's code.
  resident = report['train']['total_bytes'] + train.PREFETCH * report['train_batch_bytes']
  if eval_step:
    compiled, start, error = _compile(job.eval_step, state.ema_params, state.batch_stats,
                                      eval_batch)
    if error is not None:
      return _failed(report, error, time.perf_counter() - start)
    report['eval'] = _while_evaluating(compiled, start, state, eval_batch, report['train'],
                                       len(where.devices))
    resident += report['eval']['code_bytes']
  return _verdict(report, resident, where, job)


def _describe_job(config, where: Target, job) -> dict[str, Any]:
  """The report's first fields: what is compiled, for what."""
  import jax  # deferred: JAX starts only after prepare_environment
  chips = len(where.devices)
  return {
      'topology': where.name, 'description': where.description, 'chips': chips,
      'device_kind': where.devices[0].device_kind, 'model': config.model.name,
      'dtype': config.model.dtype, 'layout': 'scan' if config.model.scan_blocks else 'unrolled',
      'remat': bool(config.model.remat), 'image_size': job.source.image_shape[0],
      'batch_size': config.batch_size, 'per_chip_batch': config.batch_size // chips,
      'eval_batch_size': job.source.eval_batch_size, 'memory_per_chip_bytes': where.memory_bytes,
      'memory_kind': ('host memory (all CPU devices together)' if where.shared_memory
                      else 'HBM usable by XLA'),
      'jax': jax.__version__,
  }


def _while_evaluating(compiled, start: float, state, eval_batch, train_memory: dict[str, Any],
                      chips: int) -> dict[str, Any]:
  """The eval step's memory and costs; its `total_bytes`, what a chip holds while evaluating: the
  train state (the eval step's parameters are part of it), both programs' code, an eval batch,
  the eval step's outputs and temporaries."""
  m = memory(compiled)
  state_bytes = nbytes(state)  # replicated: every chip holds all of it
  batch_bytes = nbytes(eval_batch) // chips
  return dict(m, **costs(compiled), compile_s=_seconds(start),
              total_bytes=state_bytes + batch_bytes + m['output_bytes'] + m['temp_bytes']
              + m['code_bytes'] + train_memory['code_bytes'])


def _verdict(report: dict[str, Any], resident: int, where: Target, job) -> dict[str, Any]:
  """`report` completed: the peak per chip (training with `resident` bytes, or evaluating),
  whether it fits, how much is to spare, and the estimate."""
  report['train_resident_bytes'] = resident
  report['peak_bytes'] = max(resident, report['eval']['total_bytes'] if 'eval' in report else 0)
  used = report['peak_bytes'] * (len(where.devices) if where.shared_memory else 1)
  report['fits'] = used <= where.memory_bytes
  report['spare_bytes'] = where.memory_bytes - used
  report['estimate'] = estimate(report, where, job)
  return report


def _failed(report: dict[str, Any], error: Exception, seconds: float) -> dict[str, Any]:
  """`report` of a step that did not compile: the error's first line and, where XLA refused a
  program larger than HBM, by how much."""
  message = str(error).strip()
  report.update(fits=False, error=message.splitlines()[0] if message else type(error).__name__,
                compile_s=round(seconds, 1))
  report.update(refusal(message))
  return report
