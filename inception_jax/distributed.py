"""Multi-host start-up: `jax.distributed.initialize` when the job runs as several processes."""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import Optional

from absl import logging
import jax

from inception_jax import faults
from inception_jax.errors import ConfigError, first_line

PEER_TIMEOUT_S = 60.0  # how long a silent process counts as alive (main.py: --peer_timeout)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, peer_timeout_s: float = PEER_TIMEOUT_S) -> None:
  """Joins the processes of one job, and watches them (`PeerWatch`): where one dies, the others
  stop within about `peer_timeout_s` seconds, saying which one was lost.

  Explicit arguments win; otherwise on Cloud TPU VMs and in SLURM jobs with several tasks JAX
  finds the processes itself (on a TPU VM from its metadata server; the distributed client is what
  lets every host agree on a checkpoint at preemption). A single process elsewhere needs nothing.
  """
  if peer_timeout_s <= 0:
    raise ConfigError(f'--peer_timeout={peer_timeout_s} must be positive (seconds).')
  # JAX's own heartbeat ends a process that lost a peer by aborting it; it waits longer than ours.
  timeouts = dict(heartbeat_timeout_seconds=int(max(100, 2 * peer_timeout_s + 10)))
  if coordinator_address and (num_processes is None or process_id is None):
    raise ConfigError('--coordinator_address needs --num_processes and --process_id too.')
  if not joins_others(coordinator_address):
    return
  # A coordinator that cannot be reached within JAX's 300 s makes its client abort the process
  # (supervise.py reports it).
  if coordinator_address:
    _use_gloo_on_cpu()
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **timeouts)
  else:
    jax.distributed.initialize(**timeouts)
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1:
    PeerWatch(peer_timeout_s).start()


class PeerWatch:
  """Each process of a job writes a counter to the coordinator's key-value store every
  `timeout_s / 10` seconds and reads the others'. A process whose counter has not moved for
  `timeout_s`, or a coordinator that has not answered for as long, is lost: this process then
  says so and exits with `faults.EXIT_STATUS` (a collective waiting on the lost process would
  otherwise hang until JAX's heartbeat aborts it with a C++ stack dump).

  Two daemon threads: one talks to the coordinator (a call to a dead one may block), the other
  judges. `verdict()` lets the main thread, whose collective failed, wait for the judgement."""

  PREFIX = 'inception_jax/alive/'
  current: Optional['PeerWatch'] = None

  def __init__(self, timeout_s: float):
    from jax._src import distributed as jax_distributed  # the client JAX connected
    self.client = jax_distributed.global_state.client
    self.address = jax_distributed.global_state.coordinator_address
    self.timeout_s = float(timeout_s)
    self.me, self.count = jax.process_index(), jax.process_count()
    now = time.monotonic()
    self._lock = threading.Lock()
    self._seen = {p: (None, now) for p in range(self.count) if p != self.me}
    self._answered = now
    self._lost = threading.Event()

  def start(self) -> None:
    PeerWatch.current = self
    for target in (self._beat, self._judge):
      threading.Thread(target=target, daemon=True, name=f'PeerWatch.{target.__name__}').start()

  def _beat(self) -> None:
    beat = 0
    while True:
      try:
        self.client.key_value_set(f'{self.PREFIX}{self.me}', str(beat), allow_overwrite=True)
        values = dict(self.client.key_value_dir_get(self.PREFIX))
      except Exception:  # pylint: disable=broad-except  (the coordinator is unreachable)
        time.sleep(self.timeout_s / 10)
        continue
      now = time.monotonic()
      with self._lock:
        self._answered = now
        for p, (value, _) in self._seen.items():
          new = values.get(f'{self.PREFIX}{p}')
          if new is not None and new != value:
            self._seen[p] = (new, now)
      beat += 1
      time.sleep(self.timeout_s / 10)

  def lost(self) -> Optional[str]:
    """What was lost ('process 1 of 2', 'the coordinator ...'), or None while all are there."""
    now = time.monotonic()
    with self._lock:
      if now - self._answered > self.timeout_s:
        return (f'the coordinator (process 0 of {self.count}, {self.address}) has not answered '
                f'for {now - self._answered:.0f} s')
      silent = [p for p, (_, seen) in self._seen.items() if now - seen > self.timeout_s]
    if silent:
      names = ', '.join(map(str, silent))
      return (f'process {names} of {self.count} stopped responding (no heartbeat for '
              f'{self.timeout_s:.0f} s: killed, crashed, or its host went down)')
    return None

  def _judge(self) -> None:
    while True:
      time.sleep(self.timeout_s / 10)
      what = self.lost()
      if what is not None:
        self._lost.set()
        faults.exit_now(peer_lost_message(what, self.me))

  def verdict(self, wait_s: float) -> Optional[str]:
    """`lost()` once it has an answer or after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
      what = self.lost()
      if what is not None:
        return what
      time.sleep(min(0.2, self.timeout_s / 10))
    return self.lost()


def peer_lost_message(what: str, me: int) -> str:
  workdir = faults.current_workdir()
  hint = (faults.resume_hint(workdir, hosts=True) if workdir else
          'rerun the same command on every host')
  return f'{what}; process {me} stops too. Once every host is back, {hint}.'


def peer_lost(error: BaseException) -> faults.PeerLost:
  """The fault for a collective that failed because a process was lost (waits for `PeerWatch`'s
  judgement, at most its timeout)."""
  watch = PeerWatch.current
  what = watch.verdict(watch.timeout_s * 1.5) if watch else None
  if what is None:
    what = f'a collective with the other processes failed ({first_line(error)})'
  return faults.PeerLost(peer_lost_message(what, jax.process_index()))


def joins_others(coordinator_address: Optional[str] = None) -> bool:
  """Whether `initialize` will start JAX's distributed client (several processes, or a TPU VM)."""
  return bool(coordinator_address) or int(os.environ.get('SLURM_NTASKS', '1')) > 1 or \
      on_tpu_vm() or 'TPU_WORKER_HOSTNAMES' in os.environ or \
      'MEGASCALE_COORDINATOR_ADDRESS' in os.environ


def _use_gloo_on_cpu() -> None:
  if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')


def on_tpu_vm() -> bool:
  """Whether this machine has TPU chips (a Cloud TPU VM): their device files."""
  return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))
