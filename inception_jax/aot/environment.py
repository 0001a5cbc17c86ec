"""Where the job is compiled for: libtpu's settings, the environment set before JAX starts, and
the devices of a topology (`Target`, `target`)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
from typing import Iterator, Optional

from inception_jax.aot.chips import CHIPS, CPU_PREFIX, GIB, SLICES, known_topologies
from inception_jax.errors import ConfigError, UserError


def libtpu_missing() -> Optional[str]:
  """How to install libtpu when it is missing (None when it is installed)."""
  if importlib.util.find_spec('libtpu') is not None:
    return None
  import jax  # deferred: JAX starts only after prepare_environment
  return (f'Compiling for TPUs needs libtpu, which is not installed. Install it with '
          f'pip install -e ".[tpu]" (or pip install "jax[tpu]=={jax.__version__}").')


def _libtpu_settings(name: str) -> dict[str, str]:
  """The environment libtpu needs to compile for slice `name` on a machine without TPUs (none on
  a TPU VM): the slice's type and hosts, which it otherwise warns at start-up that it cannot find,
  and leave to load in several processes at once (compiling holds no chip; by default a lock file
  lets one process load it). libtpu reads them when it loads, once per process."""
  # deferred: inception_jax.distributed imports JAX, which must start after prepare_environment
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
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  _ask_cpu_devices(_cpu_count(topology))


def _ask_cpu_devices(count: int) -> None:
  """XLA_FLAGS asking for at least `count` host devices (a larger count already there stays)."""
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
  if topology.startswith(CPU_PREFIX):
    return _cpu_target(topology)
  if topology not in SLICES:
    raise ConfigError(f'Unknown --topology={topology}. Known: {", ".join(known_topologies())}.')
  missing = libtpu_missing()
  if missing:
    raise UserError(missing)
  return _tpu_target(topology)


def _cpu_target(topology: str) -> Target:
  """cpu:N: N of this process's CPU devices, sharing the host's memory."""
  import jax  # deferred: JAX starts only after prepare_environment
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


def _tpu_target(topology: str) -> Target:
  """A Cloud TPU slice: libtpu's compile-only devices of its JAX topology, and its chip's
  figures."""
  # deferred: JAX starts only after prepare_environment
  from jax.experimental import topologies
  spec, chip = SLICES[topology], CHIPS[SLICES[topology].chip]
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
