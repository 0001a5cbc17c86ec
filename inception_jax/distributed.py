"""Multi-host start-up: `jax.distributed.initialize` when the job runs as several processes."""

from __future__ import annotations

import glob
import os
from typing import Optional

from absl import logging
import jax

from inception_jax.errors import ConfigError


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins the processes of one job.

  Explicit arguments win; otherwise on Cloud TPU VMs and in SLURM jobs with several tasks JAX
  finds the processes itself (on a TPU VM from its metadata server; the distributed client is what
  lets every host agree on a checkpoint at preemption). A single process elsewhere needs nothing.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ConfigError('--coordinator_address needs --num_processes and --process_id too.')
    _use_gloo_on_cpu()
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or on_tpu_vm() or \
      'TPU_WORKER_HOSTNAMES' in os.environ or 'MEGASCALE_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize()
  else:
    return
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _use_gloo_on_cpu() -> None:
  if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')


def on_tpu_vm() -> bool:
  """Whether this machine has TPU chips (a Cloud TPU VM): their device files."""
  return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))
