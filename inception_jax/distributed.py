"""Multi-host start-up: `jax.distributed.initialize` when the job runs as several processes."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from typing import Optional

from absl import logging
import jax

from inception_jax import faults, progress, tpu_guard
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
  """Each process of a job writes a counter, its step and its phase (`progress.Seen`) to the
  coordinator's key-value store every `timeout_s / 10` seconds and reads the others'. A process
  whose counter has not moved for `timeout_s`, or a coordinator that has not answered for as
  long, is lost; where every process's step has stood still for `progress.Progress.limit`, the
  ones behind are stuck (`progress.stalled`: a main thread stuck while its heartbeat goes on).
  This process then says so and exits with `faults.EXIT_STATUS` (a collective waiting on the lost
  process would otherwise hang, or with a dead peer, until JAX's heartbeat aborts it with a C++
  stack dump).

  Two daemon threads: one talks to the coordinator (a call to a dead one may block), the other
  judges; they run while the main thread waits in a collective (XLA releases the GIL). A judge
  that finds it slept far longer than it asked (this process was stopped, SIGSTOP then SIGCONT)
  starts its clocks again rather than count the others as silent. `verdict()` lets the main
  thread, whose collective failed, wait for the judgement."""

  PREFIX = 'inception_jax/alive/'
  STALLED = PREFIX + 'stalled'  # the first judgement of a stall, for every process to give
  current: Optional['PeerWatch'] = None

  def __init__(self, timeout_s: float):
    from jax._src import distributed as jax_distributed  # the client JAX connected
    self.client = jax_distributed.global_state.client
    self.address = jax_distributed.global_state.coordinator_address
    self.timeout_s = float(timeout_s)
    self.me, self.count = jax.process_index(), jax.process_count()
    self.host = socket.gethostname()
    now = time.monotonic()
    self._lock = threading.Lock()
    self._seen = {p: (None, now) for p in range(self.count) if p != self.me}
    self._steps = {p: progress.Seen(0, 'starting', now) for p in self._seen}
    self._answered = self._resumed = now
    self._told: Optional[str] = None  # another process's judgement of a stall
    self._lost = threading.Event()

  def start(self) -> None:
    PeerWatch.current = self
    for target in (self._beat, self._judge):
      threading.Thread(target=target, daemon=True, name=f'PeerWatch.{target.__name__}').start()

  def _beat(self) -> None:
    beat = 0
    while True:
      mine = dataclasses.replace(progress.current().seen, host=self.host)
      try:
        self.client.key_value_set(f'{self.PREFIX}{self.me}', f'{beat} {mine.encode()}',
                                  allow_overwrite=True)
        values = dict(self.client.key_value_dir_get(self.PREFIX))
      except Exception:  # pylint: disable=broad-except  (the coordinator is unreachable)
        time.sleep(self.timeout_s / 10)
        continue
      now = time.monotonic()
      with self._lock:
        self._answered = now
        self._told = values.get(self.STALLED)
        for p, (value, _) in self._seen.items():
          new = values.get(f'{self.PREFIX}{p}')
          if new is not None and new != value:
            self._seen[p] = (new, now)
            self._note(p, new.partition(' ')[2], now)
      beat += 1
      time.sleep(self.timeout_s / 10)

  def _note(self, p: int, text: str, now: float) -> None:
    seen = progress.Seen.decode(text, now)
    old = self._steps[p]
    if seen is not None and (seen.step, seen.phase, seen.host) != (old.step, old.phase, old.host):
      self._steps[p] = seen

  def _restart_clocks(self, now: float) -> None:
    with self._lock:
      self._answered = now
      self._seen = {p: (value, now) for p, (value, _) in self._seen.items()}
      self._resumed = now

  def _name(self, p: int) -> str:
    return progress.name(p, self.count, self._steps[p].host if p != self.me else self.host)

  def lost(self) -> Optional[str]:
    """What was lost ('process 1 of 2', 'the coordinator ...'), or None while all are there."""
    now = time.monotonic()
    with self._lock:
      if now - self._answered > self.timeout_s:
        return (f'the coordinator (process 0 of {self.count}, {self.address}) has not answered '
                f'for {now - self._answered:.0f} s')
      silent = [p for p, (_, seen) in self._seen.items() if now - seen > self.timeout_s]
    if silent:
      names = ', '.join(self._name(p) for p in silent)
      return (f'{names} stopped responding (no heartbeat for {self.timeout_s:.0f} s: killed, '
              'crashed, frozen, or its host went down)')
    return None

  def stuck(self) -> Optional[str]:
    """Which processes the others wait for, their heartbeats going on (`progress.stalled`)."""
    now, mine = time.monotonic(), progress.current()
    with self._lock:
      seen = {**self._steps, self.me: dataclasses.replace(mine.seen, host=self.host)}
      seen = {p: dataclasses.replace(s, since=max(s.since, self._resumed))
              for p, s in seen.items()}
      # One whose heartbeat stopped too is judged by `lost` (it may be dead, not stuck).
      beating = all(now - self._seen[p][1] < self.timeout_s / 2 for p in self._seen)
    limit = mine.limit(self.timeout_s)
    behind = None if limit is None or not beating else progress.stalled(seen, now, limit)
    return None if behind is None else progress.stall_message(seen, behind, now, limit)

  def _judge(self) -> None:
    tick = self.timeout_s / 10
    last = time.monotonic()
    while True:
      time.sleep(tick)
      now = time.monotonic()
      if now - last > 3 * tick + 1:  # this process was stopped: the others' silence is its own
        self._restart_clocks(now)
      last = now
      what = self.lost()
      if what is None:
        what = self.stuck() or self._told
        if what is not None and what != self._told:
          self._tell(what)
      if what is not None:
        self._lost.set()
        faults.exit_now(peer_lost_message(what, self.me))

  def _tell(self, what: str) -> None:
    """Leaves the judgement of a stall in the key-value store, for the others to give: they may
    judge a little later, and where this process ended first they would see only its heartbeat
    stop."""
    try:
      self.client.key_value_set(self.STALLED, what, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  (the others judge for themselves)
      pass

  def verdict(self, wait_s: float) -> Optional[str]:
    """`lost()` or `stuck()` once either has an answer, or after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
      what = self.lost() or self.stuck()
      if what is not None:
        return what
      time.sleep(min(0.2, self.timeout_s / 10))
    return self.lost() or self.stuck()


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
  """Whether this machine has TPU chips (a Cloud TPU VM): the test that also decides whether
  libtpu starts (`tpu_guard.tpu_present`)."""
  return tpu_guard.tpu_present()
