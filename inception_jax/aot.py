"""Compiles the training job ahead of time for a Cloud TPU slice that is not there (or this
machine's CPUs) and reports whether it fits in a chip's memory and how fast it should run.

    python -m inception_jax.aot --config=configs/irv2.py --topology=v5p-128 \
        [--config.batch_size=4096] [--find_max_batch] [--json]
    python -m inception_jax.aot --config=configs/demo.py --topology=cpu:8

The job's own train and eval steps (`train.Job`: the same functions, mesh, shardings, donation and
config that `python -m inception_jax.main` builds on that slice) are lowered from abstract shapes
and compiled for the slice's devices: compile-only TPU devices from libtpu
(`pip install -e ".[tpu]"`), no parameter is materialised and no data is read (ImageNet and
CIFAR-10 have their published sizes). The report, per chip:

- memory: arguments, outputs, temporaries and code of the train step, their total less what the
  donated state shares with the outputs, and the peak during an evaluation (the train state, an
  eval batch and the eval step's own buffers), against the chip's HBM: "fits" or "does not fit by
  X GiB". XLA:TPU refuses to compile a program larger than HBM; its message is reported.
- an estimate, not a measurement: a roofline from the compiled step's FLOPs and bytes accessed
  (XLA's cost analysis) against the chip's peak bf16 FLOP/s and HBM bandwidth, the images/s per
  chip and per slice it implies and how long the config's epochs would take. It leaves out the
  gradient all-reduce over the interconnect and the input pipeline, and reaches no real chip's
  speed: use it to compare slices and batches, and measure. With scanned blocks it is too low (XLA
  counts a loop's body once): it says so. XLA's own cost-model time (`optimal_seconds`) is shown
  only where it is plausible (positive, not below the FLOP bound).

`--find_max_batch` searches the largest per-chip batch whose train step fits, to `--batch_step`
images per chip (`find_max_batch`). Exit status: 0 fits, 1 does not fit or does not
compile, 2 a setting to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterator, Optional

from absl import app, flags

from inception_jax import config_flag, errors, runtime
from inception_jax.errors import ConfigError, UserError

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """A TPU generation's figures, per chip: the HBM that XLA:TPU lets a program use (what it
  reports as "available HBM" when a program does not fit, libtpu 0.0.42: a little less than the
  HBM fitted, part of which the runtime keeps), the published peak and bandwidth."""
  hbm_gib: float
  peak_bf16_tflops: float
  hbm_gbytes_per_s: float
  cloud_name: str  # the accelerator-type prefix Cloud TPU uses, e.g. v5litepod
  device_kind: str  # what JAX calls its devices


CHIPS = {
    'v4': Chip(30.75, 275, 1200, 'v4', 'TPU v4'),  # 32 GiB fitted
    'v5e': Chip(15.75, 197, 819, 'v5litepod', 'TPU v5 lite'),  # 16 GiB
    'v5p': Chip(95.74, 459, 2765, 'v5p', 'TPU v5'),  # 96 GiB
    'v6e': Chip(31.25, 918, 1640, 'v6e', 'TPU v6 lite'),  # 32 GiB
}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A Cloud TPU slice as JAX's `get_topology_desc` names it."""
  chip: str  # a key of CHIPS
  topology: str  # JAX's topology name, chips per dimension: 'v5e:4x4', 'v5:2x4x4'
  chips_per_host: tuple[int, int, int]
  megacore: bool  # v4 and v5p: one JAX device per chip (two TensorCores)

  @property
  def chips(self) -> int:
    return math.prod(int(n) for n in self.topology.split(':')[1].split('x'))


def _slices() -> dict[str, Slice]:
  """Cloud TPU accelerator types -> JAX topologies. v4-N and v5p-N count TensorCores (two per
  chip); v5e-N (v5litepod-N) and v6e-N count chips. Multi-host slices have 4 chips per host; v5e
  and v6e slices of up to 8 chips are one host."""
  table = {}
  v4 = ('2x2x1', '2x2x2', '2x2x4', '2x4x4', '4x4x4', '4x4x8', '4x4x12', '4x8x8', '8x8x8', '8x8x12',
        '8x8x16', '8x16x16')
  for chip, prefix, shapes in (('v4', 'v4', v4), ('v5p', 'v5', v4 + ('16x16x16', '16x16x24'))):
    for shape in shapes:
      spec = Slice(chip, f'{prefix}:{shape}', (2, 2, 1), True)
      table[f'{chip}-{2 * spec.chips}'] = spec
  for shape in ('1x1', '2x2', '2x4', '4x4', '4x8', '8x8', '8x16', '16x16'):
    rows, cols = (int(n) for n in shape.split('x'))
    per_host = (rows, cols, 1) if rows * cols <= 8 else (2, 2, 1)
    for chip in ('v5e', 'v6e'):
      table[f'{chip}-{rows * cols}'] = Slice(chip, f'{chip}:{shape}', per_host, False)
  return table


SLICES = _slices()
CPU_PREFIX = 'cpu:'


def known_topologies() -> list[str]:
  def order(name):
    chip, count = name.split('-')
    return chip, int(count)
  return sorted(SLICES, key=order) + [f'{CPU_PREFIX}N']


def libtpu_missing() -> Optional[str]:
  """How to install libtpu when it is missing (None when it is installed)."""
  if importlib.util.find_spec('libtpu') is not None:
    return None
  import jax
  return (f'Compiling for TPUs needs libtpu, which is not installed. Install it with '
          f'pip install -e ".[tpu]" (or pip install "jax[tpu]=={jax.__version__}").')


def _libtpu_settings(name: str) -> dict[str, str]:
  """The environment libtpu needs to compile for slice `name` on a machine without TPUs (none on
  a TPU VM): the slice's type and hosts, which it otherwise warns at start-up that it cannot find,
  and leave to load in several processes at once (compiling holds no chip; by default a lock file
  lets one process load it). libtpu reads them when it loads, once per process."""
  from inception_jax.distributed import on_tpu_vm
  if on_tpu_vm():
    return {}
  count = name.split('-')[1]
  return {'TPU_ACCELERATOR_TYPE': f'{CHIPS[SLICES[name].chip].cloud_name}-{count}',
          'TPU_WORKER_HOSTNAMES': 'localhost', 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
  """`settings` in os.environ (where unset) while inside, and taken out again: a process that goes
  on to train must not look like a TPU pod (`distributed.initialize` reads TPU_WORKER_HOSTNAMES)."""
  added = {k: v for k, v in settings.items() if k not in os.environ}
  os.environ.update(added)
  try:
    yield
  finally:
    for key in added:
      os.environ.pop(key, None)


@dataclasses.dataclass
class Target:
  """Where the job is compiled for: the devices and what one of them holds and does."""
  name: str
  devices: list
  description: str  # e.g. 'JAX topology v5e:4x4: 16 chips (TPU v5 lite), 4 hosts'
  memory_bytes: float  # per device: HBM (TPU), or the host's memory shared by the CPU devices
  shared_memory: bool  # CPU devices share the host's memory
  peak_flops: Optional[float]  # per device, bf16; None: unknown (CPUs)
  memory_bandwidth: Optional[float]  # bytes/s per device


def prepare_environment(topology: str) -> None:
  """What must be set before JAX starts: for cpu:N, N host devices and the CPU backend alone (an
  installed libtpu is not started); for a TPU slice, libtpu's quiet start-up."""
  if topology in SLICES:  # this process only compiles: they can stay
    for key, value in _libtpu_settings(topology).items():
      os.environ.setdefault(key, value)
  if not topology.startswith(CPU_PREFIX):
    return
  count = _cpu_count(topology)
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  current = os.environ.get('XLA_FLAGS', '')
  flag = '--xla_force_host_platform_device_count'
  found = re.search(rf'{flag}=(\d+)', current)
  if found is None:
    os.environ['XLA_FLAGS'] = f'{current} {flag}={count}'.strip()
  elif int(found[1]) < count:
    os.environ['XLA_FLAGS'] = current.replace(found[0], f'{flag}={count}')


def _cpu_count(topology: str) -> int:
  count = topology[len(CPU_PREFIX):]
  if not count.isdigit() or int(count) < 1:
    raise ConfigError(f'--topology={topology}: expected {CPU_PREFIX}N with N a positive number of '
                      'CPU devices, e.g. cpu:8.')
  return int(count)


def target(topology: str) -> Target:
  """The devices of `topology`: a Cloud TPU accelerator type (e.g. v5e-16, v5p-128) or cpu:N."""
  import jax
  if topology.startswith(CPU_PREFIX):
    count = _cpu_count(topology)
    devices = jax.devices('cpu')
    if len(devices) < count:
      raise ConfigError(
          f'--topology={topology}: this process has {len(devices)} CPU device(s). Set XLA_FLAGS='
          f'--xla_force_host_platform_device_count={count} before JAX starts (the command does '
          'this itself; in Python, before the first JAX call).')
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    return Target(topology, devices[:count], f'{count} CPU device(s) of this machine', ram, True,
                  None, None)
  if topology not in SLICES:
    raise ConfigError(f'Unknown --topology={topology}. Known: {", ".join(known_topologies())}.')
  missing = libtpu_missing()
  if missing:
    raise UserError(missing)
  spec, chip = SLICES[topology], CHIPS[SLICES[topology].chip]
  from jax.experimental import topologies
  with _environment(_libtpu_settings(topology)):
    description = topologies.get_topology_desc(
        topology_name=spec.topology, platform='tpu',
        chip_config_name='megacore' if spec.megacore else 'default',
        chips_per_host_bounds=spec.chips_per_host)
  devices = list(description.devices)
  hosts = len({d.process_index for d in devices})
  return Target(topology, devices,
                f'JAX topology {spec.topology}: {len(devices)} chips ({devices[0].device_kind}), '
                f'{hosts} host(s)', chip.hbm_gib * GIB, False, chip.peak_bf16_tflops * 1e12,
                chip.hbm_gbytes_per_s * 1e9)


def _source(config, devices):
  """The config's data source, or for ImageNet and CIFAR-10 a stand-in with their shapes and
  published sizes (no file opened: the data need not be on this machine)."""
  from inception_jax import data, prepare
  from inception_jax.data import tfds_sources
  hosts = len({d.process_index for d in devices})
  options = dict(batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                 seed=config.seed, process_index=0, process_count=hosts)
  if config.dataset.name in prepare.DATASETS:
    return tfds_sources.create(config.dataset, read=False, **options)
  return data.create_source(config.dataset, **options)


def memory(compiled) -> Optional[dict[str, int]]:
  """XLA's memory account of a compiled program, per device (None where the backend gives none):
  `total_bytes` = arguments + outputs - outputs in donated arguments' buffers + temporaries +
  code."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  fields = {'argument_bytes': m.argument_size_in_bytes, 'output_bytes': m.output_size_in_bytes,
            'alias_bytes': m.alias_size_in_bytes, 'temp_bytes': m.temp_size_in_bytes,
            'code_bytes': m.generated_code_size_in_bytes}
  fields = {k: int(v) for k, v in fields.items()}
  fields['total_bytes'] = (fields['argument_bytes'] + fields['output_bytes']
                           - fields['alias_bytes'] + fields['temp_bytes'] + fields['code_bytes'])
  return fields


def costs(compiled) -> dict[str, Optional[float]]:
  """XLA's cost analysis of a compiled program, per device: flops, bytes_accessed and the cost
  model's optimal_seconds (None where absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  get = lambda key: float(analysis[key]) if key in analysis else None
  return {'flops': get('flops'), 'bytes_accessed': get('bytes accessed'),
          'optimal_seconds': get('optimal_seconds')}


def _nbytes(tree) -> int:
  import jax
  return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(tree))


# XLA:TPU's refusals of a program larger than HBM (not of one that overflows on-chip memory such as
# VMEM, which no batch size fixes), as (required, available): "Ran out of memory on HBM, the total
# memory required for HLO temporaries (18.43G) exceeds available HBM (15.75G)." and "Ran out of
# memory in memory space hbm. Used 21.95G of 15.48G hbm."
OUT_OF_MEMORY = re.compile(r'(out of memory|exceeds available|exceeded).{0,40}\b(hbm|HBM)\b',
                           re.IGNORECASE)
_AMOUNTS = (re.compile(r'\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)'),
            re.compile(r'Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm'))


def _xla_bytes(value: str, unit: str) -> float:
  return float(value) * 1024 ** 'KMGT'.index(unit) * 1024


@contextlib.contextmanager
def _unsaved() -> Iterator[None]:
  """Compiles inside add nothing to JAX's persistent compilation cache: a compile-only TPU
  program cannot be loaded back from it (JAX warns on every later read), and a cached compile
  would report a compile time of nothing."""
  import jax
  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float('inf'))
  try:
    yield
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', previous)


def compile_job(config, topology: str | Target, *, eval_step: bool = True,
                compiled_train: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Compiles `config`'s training job for `topology` and returns the report (see the module's
  docstring); the record that --json prints. Raises ConfigError for a config that cannot run
  there (e.g. a batch that does not split over the chips). `eval_step=False` compiles the train
  step alone; `compiled_train`, a report of `eval_step=False` for this same config and topology,
  is completed with the eval step instead of compiling the train step again."""
  import jax

  from inception_jax import config_checks, train
  where = target(topology) if isinstance(topology, str) else topology
  chips = len(where.devices)
  config_checks.validate(config, where.devices)
  job = train.Job(config, _source(config, where.devices), where.devices)
  report = {
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
  state = job.abstract_state()
  train_batch, eval_batch = job.abstract_batch(True), job.abstract_batch(False)
  if compiled_train is not None:
    report['train'] = dict(compiled_train['train'])
  else:
    start = time.perf_counter()
    try:
      with _unsaved():
        compiled = job.train_step.lower(state, train_batch).compile()
    except Exception as e:  # pylint: disable=broad-except  (XLA raises JaxRuntimeError)
      return _failed(report, e, time.perf_counter() - start, where)
    report['train'] = dict(memory(compiled), **costs(compiled),
                           compile_s=round(time.perf_counter() - start, 1))
  report['train_batch_bytes'] = _nbytes(train_batch) // chips  # per chip
  train_memory = report['train']
  # While training, the chip also holds the batches transferred ahead and the eval step's code.
  resident = train_memory['total_bytes'] + train.PREFETCH * report['train_batch_bytes']
  if eval_step:
    start = time.perf_counter()
    try:
      with _unsaved():
        compiled_eval = job.eval_step.lower(state.ema_params, state.batch_stats,
                                            eval_batch).compile()
    except Exception as e:  # pylint: disable=broad-except
      return _failed(report, e, time.perf_counter() - start, where)
    m = memory(compiled_eval)
    resident += m['code_bytes']
    # While evaluating: the train state (the eval step's parameters are part of it), both
    # programs' code, an eval batch, the eval step's outputs and temporaries.
    state_bytes = _nbytes(state)  # replicated: every chip holds all of it
    batch_bytes = _nbytes(eval_batch) // chips
    report['eval'] = dict(m, **costs(compiled_eval),
                          compile_s=round(time.perf_counter() - start, 1),
                          total_bytes=state_bytes + batch_bytes + m['output_bytes']
                          + m['temp_bytes'] + m['code_bytes'] + train_memory['code_bytes'])
  report['train_resident_bytes'] = resident
  report['peak_bytes'] = max(resident, report['eval']['total_bytes'] if eval_step else 0)
  used = report['peak_bytes'] * (chips if where.shared_memory else 1)
  report['fits'] = used <= where.memory_bytes
  report['spare_bytes'] = where.memory_bytes - used
  report['estimate'] = estimate(report, where, job)
  return report


def _failed(report: dict[str, Any], error: Exception, seconds: float, where: Target
            ) -> dict[str, Any]:
  message = str(error).strip()
  report.update(fits=False, error=message.splitlines()[0] if message else type(error).__name__,
                compile_s=round(seconds, 1))
  report['out_of_memory'] = bool(OUT_OF_MEMORY.search(message))
  needed = next((m for m in (p.search(message) for p in _AMOUNTS) if m), None)
  if needed:
    report['required_bytes'] = _xla_bytes(*needed.group(1, 2))
    report['available_bytes'] = _xla_bytes(*needed.group(3, 4))
    report['spare_bytes'] = report['available_bytes'] - report['required_bytes']
  return report


def estimate(report: dict[str, Any], where: Target, job) -> Optional[dict[str, Any]]:
  """The roofline estimate of a training step (None without the chip's figures or costs)."""
  train = report['train']
  if where.peak_flops is None or not train['flops']:
    return None
  compute_s = train['flops'] / where.peak_flops
  memory_s = (train['bytes_accessed'] or 0.0) / where.memory_bandwidth
  step_s = max(compute_s, memory_s)
  per_chip = report['per_chip_batch'] / step_s
  slice_rate = per_chip * report['chips']
  steps = job.num_steps
  model = train.get('optimal_seconds')
  plausible = model is not None and math.isfinite(model) and model >= compute_s
  return {
      'compute_bound_s': compute_s, 'memory_bound_s': memory_s, 'step_s': step_s,
      'bound': 'compute' if compute_s >= memory_s else 'memory',
      'flops_per_image': train['flops'] / report['per_chip_batch'],
      'img_per_s_per_chip': per_chip, 'img_per_s': slice_rate,
      'train_hours': steps * step_s / 3600, 'train_steps': steps,
      'epochs': steps / job.steps_per_epoch,
      # XLA's cost analysis counts the body of a loop once, whatever its trip count.
      'undercounted': bool(job.config.model.scan_blocks),
      'cost_model_step_s': model if plausible else None,
      'cost_model_note': (None if plausible else
                          'no figure' if model is None else f'{model:.3g} s: implausible, unused'),
  }


def find_max_batch(config, topology: str | Target, batch_step: int = 8,
                   progress: Callable[[str], None] = lambda line: None,
                   limit: int = 1 << 16) -> dict[str, Any]:
  """The report at the largest per-chip batch whose train step fits, to `batch_step` images per
  chip (below `batch_step`, to one image): a search from the config's batch that compiles a few
  candidates, XLA deciding each. The next candidate is where the memory measured so far,
  extrapolated (the line through the two largest batches that fit; with one, a fixed part plus
  temporaries in proportion to the batch), would fill the chip, kept strictly between the largest
  batch known to fit and the smallest known not to; after a wrong prediction the search bisects
  once. The batch never exceeds `limit` per chip nor the dataset's training examples.
  `progress` gets a line per compile. The report says `fits: False` when not even 1 image per
  chip fits, and carries the error when a candidate fails to compile for another reason."""
  where = target(topology) if isinstance(topology, str) else topology
  chips = len(where.devices)
  limit = min(limit, _source(config, where.devices).train_size // chips)
  tried: dict[int, dict[str, Any]] = {}
  capacity = where.memory_bytes / (chips if where.shared_memory else 1)

  def compiled(per_chip: int) -> dict[str, Any]:
    trial = config.copy_and_resolve_references()
    trial.batch_size = per_chip * chips
    report = tried[per_chip] = compile_job(trial, where, eval_step=False)
    progress(f'{per_chip:>6} per chip: ' + (
        f'fits ({report["peak_bytes"] / GIB:.2f} GiB, compiled in '
        f'{report["train"]["compile_s"]:.0f} s)' if report['fits'] else
        f'does not fit ({report["compile_s"]:.0f} s)' if report.get('out_of_memory') else
        f'does not compile: {report["error"]}' if 'error' in report else
        f'does not fit ({report["peak_bytes"] / GIB:.2f} GiB)'))
    return report

  def predicted() -> int:
    """Where the memory of the batches that fit, extrapolated, fills the chip."""
    sizes = sorted(b for b, r in tried.items() if r['fits'])[-2:]
    peaks = [tried[b]['peak_bytes'] for b in sizes]
    if len(sizes) == 2 and peaks[1] > peaks[0]:
      slope = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    else:
      from inception_jax.train import PREFETCH
      last = tried[sizes[-1]]
      slope = (last['train']['temp_bytes'] + (1 + PREFETCH) * last['train_batch_bytes']) / sizes[-1]
    return sizes[-1] + int((capacity - peaks[-1]) / slope) if slope > 0 else 2 * sizes[-1]

  low, high = 0, None  # the largest per-chip batch known to fit, the smallest known not to
  per_chip, expected = min(max(config.batch_size // chips, 1), limit), None
  while per_chip is not None:
    report = compiled(per_chip)
    if 'error' in report and not report.get('out_of_memory'):
      return dict(report, searched=_searched(tried), batch_step=batch_step)
    if report['fits']:
      low = per_chip
    else:
      high = per_chip
    missed, expected = expected is not None and report['fits'] != expected, None
    if low == 0:
      if high == 1:
        return dict(report, searched=_searched(tried), batch_step=batch_step)
      per_chip = high // 2
      continue
    ceiling = high if high is not None else limit + 1
    grid = [b for b in range(low + 1, ceiling) if b % batch_step == 0 or b < batch_step]
    guess = predicted()
    if not grid:
      per_chip = None  # done: the answer is low (high does not fit, or low is the limit)
    elif missed and high is not None:
      per_chip = grid[len(grid) // 2]  # the prediction was wrong: bisect once
    elif guess < grid[0]:
      per_chip, expected = grid[0], False
    elif guess > grid[-1]:
      per_chip, expected = grid[-1], None if high is None else True
    else:
      per_chip, expected = max(b for b in grid if b <= guess), True
  best = config.copy_and_resolve_references()
  best.batch_size = low * chips
  report = compile_job(best, where, compiled_train=tried[low])
  return dict(report, searched=_searched(tried), batch_step=batch_step,
              at_limit=high is None)


def _searched(tried: dict[int, dict[str, Any]]) -> dict[str, bool]:
  return {str(k): v['fits'] for k, v in sorted(tried.items())}


def describe(report: dict[str, Any]) -> str:
  """The report as text."""
  lines = [f'{report["model"]} ({report["dtype"]}, {report["layout"]}'
           f'{", remat" if report["remat"] else ""}) on {report["topology"]} '
           f'({report["description"]}): global batch {report["batch_size"]} = '
           f'{report["per_chip_batch"]} per chip, eval batch {report["eval_batch_size"]}, '
           f'{report["image_size"]}x{report["image_size"]} images']
  capacity = report['memory_per_chip_bytes'] / GIB
  if 'error' in report:
    if 'required_bytes' in report:
      lines.append(f'does not fit by {-report["spare_bytes"] / GIB:.2f} GiB: XLA needs '
                   f'{report["required_bytes"] / GIB:.2f} GiB of HBM where '
                   f'{report["available_bytes"] / GIB:.2f} GiB are available')
    lines.append(('does not fit' if report.get('out_of_memory') else 'does not compile')
                 + f' ({report["compile_s"]:.0f} s of compiling): {report["error"]}')
    return '\n'.join(lines + _search_line(report))
  train_memory, evaluation = report['train'], report.get('eval')
  lines.append(f'compiled in {train_memory["compile_s"]:.0f} s (train step)' + (
      f', {evaluation["compile_s"]:.0f} s (eval step)' if evaluation else ''))
  gib = lambda key, part=train_memory: f'{part[key] / GIB:.3f}'
  batch = report['train_batch_bytes']
  lines.append(
      f'memory per chip, GiB: arguments {gib("argument_bytes")} (state '
      f'{(train_memory["argument_bytes"] - batch) / GIB:.3f}, batch {batch / GIB:.3f}), outputs '
      f'{gib("output_bytes")} ({gib("alias_bytes")} of them in the donated state\'s buffers), '
      f'temporaries {gib("temp_bytes")}, code {gib("code_bytes")}: {gib("total_bytes")} in all')
  if evaluation:
    lines.append(f'while evaluating: {gib("total_bytes", evaluation)} (the train state, an eval '
                 f'batch, the eval step\'s temporaries {gib("temp_bytes", evaluation)} and both '
                 'steps\' code)')
  verdict = (f'fits ({report["spare_bytes"] / GIB:.2f} GiB to spare)' if report['fits'] else
             f'does not fit by {-report["spare_bytes"] / GIB:.2f} GiB')
  resident = report.get('train_resident_bytes', train_memory['total_bytes'])
  lines.append(f'peak {report["peak_bytes"] / GIB:.2f} GiB per chip (training: '
               f'{resident / GIB:.2f} with the batches sent ahead and the eval step\'s code) of '
               f'{capacity:.2f} GiB {report["memory_kind"]}: {verdict}')
  guess = report.get('estimate')
  if guess is None:
    lines.append('estimate: none (no peak FLOP/s and bandwidth figures for this device)')
  else:
    lines += [
        'ESTIMATE (XLA cost analysis + roofline; not a measurement, no interconnect or input '
        'pipeline):',
        *(['  TOO LOW: the blocks are scanned, and XLA counts a loop\'s body once; compile with '
           '--config.model.scan_blocks=False for the estimate']
          if guess.get('undercounted') else []),
        f'  {report["train"]["flops"]:.3g} FLOPs ({guess["flops_per_image"] / 1e9:.1f} GFLOP per '
        f'image) and {report["train"]["bytes_accessed"] or 0:.3g} bytes accessed per chip per '
        'step',
        f'  compute-bound {_ms(guess["compute_bound_s"])}, memory-bound '
        f'{_ms(guess["memory_bound_s"])}: {_ms(guess["step_s"])} per step ({guess["bound"]}-bound)',
        f'  {guess["img_per_s_per_chip"]:,.0f} img/s per chip, {guess["img_per_s"]:,.0f} img/s '
        f'for the slice; {guess["epochs"]:.4g} epochs ({guess["train_steps"]:,.0f} steps) in '
        f'{guess["train_hours"]:.3g} h',
        '  XLA\'s cost model: ' + (f'{_ms(guess["cost_model_step_s"])} per step'
                                   if guess['cost_model_step_s'] is not None
                                   else guess['cost_model_note'])]
  return '\n'.join(lines + _search_line(report))


def _search_line(report: dict[str, Any]) -> list[str]:
  if 'searched' not in report:
    return []
  tried = ', '.join(f'{k} {"fits" if v else "no"}' for k, v in report['searched'].items())
  if not report['searched'].get(str(report['per_chip_batch'])):
    return [f'search stopped at {report["per_chip_batch"]} per chip; tried {tried}']
  return [f'largest per-chip batch whose train step fits (to {report["batch_step"]} images): '
          f'{report["per_chip_batch"]}' + (
              ' (the most the search tries: the training examples or its limit)'
              if report.get('at_limit') else '') + f'; tried {tried}']


def _ms(seconds: float) -> str:
  return f'{seconds * 1e3:.3g} ms'


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags: defined when it runs, not on import (the module is a library too, and
  absl refuses a flag defined twice, e.g. --json by another program importing it)."""
  flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type (v4-8, v5e-16, v5p-128, '
                      'v6e-64, ...) or cpu:N (this machine\'s CPU, as N devices).')
  flags.DEFINE_bool('find_max_batch', False, 'Search the largest per-chip batch that fits.')
  flags.DEFINE_integer('batch_step', 8, 'Resolution of --find_max_batch, in images per chip.')
  flags.DEFINE_bool('json', False, 'Print the report as one JSON record.')
  config_flag.define('config')
  flags.mark_flags_as_required(['config', 'topology'])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.start()
  say = lambda line: print(line, file=sys.stderr, flush=True)
  with errors.reported():
    prepare_environment(FLAGS.topology)  # before JAX starts
    import jax
    # The command reports compile times: none may come from the persistent cache.
    jax.config.update('jax_enable_compilation_cache', False)
    where = target(FLAGS.topology)
    say(f'Compiling {FLAGS.config.model.name} for {where.name} ({where.description}); the full '
        'networks take minutes per compile on a CPU.')
    if FLAGS.find_max_batch:
      report = find_max_batch(FLAGS.config, where, FLAGS.batch_step, progress=say)
    else:
      report = compile_job(FLAGS.config, where)
  print(json.dumps(report) if FLAGS.json else describe(report), flush=True)
  sys.exit(0 if report['fits'] else 1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)
