"""Where each process of a job stands, and which one the others wait for: the step watchdog.

The training loop records its step and phase here (`Progress`); `distributed.PeerWatch` publishes
them with each heartbeat and judges the job's processes with `stalled`. A process whose heartbeat
stops is lost (PeerWatch); one whose heartbeat goes on while its main thread is stuck (a wedged
host: a hung input pipeline, filesystem or driver call) is caught here: where no process has
moved for `Progress.limit` seconds, the processes furthest behind, still between steps, are the
ones the others wait for in a collective.

The limit is max(the peer timeout, `PAUSES` x the longest pause between two steps of the last
`WINDOW`). JAX dispatches steps ahead of the devices, so the main thread moves in bursts: it waits
at each step that reads a result (a log line, a checkpoint) for every step dispatched since, and
that wait is a pause; no process is judged before it has made `sync_every` steps (one such wait).
Phases other than 'training' (the start and its compiles, saving a checkpoint, evaluating, the
end) are never judged: they may legitimately take minutes while the others wait. A process counts
as moved when its step or its phase changes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
from typing import Iterator, Optional

# In the order a step goes through them: a process in a later phase of the same step is ahead.
PHASES = ('starting', 'training', 'saving', 'evaluating', 'finishing')
TRAINING = 'training'
PAUSES = 3  # a stall: no move for max(peer timeout, this many times the longest pause)
WINDOW = 100  # steps whose pauses count


@dataclasses.dataclass(frozen=True)
class Seen:
  """A process's step and phase, and when the observer saw them change (time.monotonic())."""
  step: int
  phase: str
  since: float
  host: str = ''

  def position(self) -> tuple[int, int]:
    return self.step, PHASES.index(self.phase) if self.phase in PHASES else 0

  def encode(self) -> str:
    return f'{self.step} {self.phase} {self.host}'

  @classmethod
  def decode(cls, text: str, since: float) -> Optional['Seen']:
    """From `encode`'s text (None for another format)."""
    step, phase, host = (text.split(' ', 2) + ['', ''])[:3]
    return cls(int(step), phase, since, host) if step.lstrip('-').isdigit() else None


class Progress:
  """The training loop's step and phase (the main thread writes, watchdog threads read).
  `sync_every`: the most steps between two that wait for the devices (log lines, checkpoints)."""

  def __init__(self, sync_every: int = 1):
    self.seen = Seen(0, 'starting', time.monotonic())
    self.sync_every = sync_every
    self._pauses = collections.deque(maxlen=WINDOW)
    self._lock = threading.Lock()

  def _set(self, step: int, phase: str) -> None:
    now = time.monotonic()
    with self._lock:
      if phase == TRAINING and self.seen.phase == TRAINING and step > self.seen.step:
        self._pauses.append(now - self.seen.since)
      self.seen = Seen(step, phase, now)

  def stepped(self, step: int) -> None:
    """Step `step` was dispatched (its compile, the first time, is over)."""
    self._set(step, TRAINING)

  @contextlib.contextmanager
  def busy(self, phase: str) -> Iterator[None]:
    """Marks what runs inside as `phase` (never judged); back to the phase before after it."""
    before = self.seen
    self._set(before.step, phase)
    try:
      yield
    finally:
      self._set(before.step, before.phase)

  def finish(self) -> None:
    self._set(self.seen.step, 'finishing')

  def limit(self, timeout_s: float) -> Optional[float]:
    """Seconds without a move that make a stall: max(timeout_s, PAUSES x the longest recent
    pause); None until `sync_every` steps have been timed."""
    with self._lock:
      pauses = list(self._pauses)
    if len(pauses) < min(self.sync_every, WINDOW):
      return None
    return max(timeout_s, PAUSES * max(pauses))


_CURRENT = [Progress()]


def start(sync_every: int) -> Progress:
  """A new `Progress` for a run starting in this process; `current()` returns it."""
  _CURRENT[0] = Progress(sync_every)
  return _CURRENT[0]


def current() -> Progress:
  return _CURRENT[0]


def stalled(seen: dict[int, Seen], now: float, limit: float) -> Optional[list[int]]:
  """The processes the others wait for, where the job has stalled: none of `seen` (every
  process, by index) has moved for `limit` seconds, and those furthest behind are all between
  steps ('training'). All of them where all stand at the same place. None: no stall."""
  if not seen or any(now - s.since < limit for s in seen.values()):
    return None
  low = min(s.position() for s in seen.values())
  behind = sorted(p for p, s in seen.items() if s.position() == low)
  if any(seen[p].phase != TRAINING for p in behind):
    return None
  return behind


def name(process: int, count: int, host: str = '') -> str:
  return f'process {process} of {count}' + (f' (host {host})' if host else '')


def stall_message(seen: dict[int, Seen], behind: list[int], now: float, limit: float) -> str:
  """What `stalled` found, in words."""
  first = seen[behind[0]]
  quiet = now - max(s.since for s in seen.values())
  count = len(seen)
  rule = (f'{quiet:.0f} s, over the limit of {limit:.0f} s: max(--peer_timeout, {PAUSES} x the '
          'longest recent pause between steps)')
  if len(behind) == count:
    return (f'no process of {count} has moved past step {first.step} for {rule}: a collective or '
            'a device is stuck')
  names = ', '.join(name(p, count, seen[p].host) for p in behind)
  ahead = max(s.step for s in seen.values())
  return (f'{names} {"is" if len(behind) == 1 else "are"} stuck at step {first.step} while the '
          f'others wait at step {ahead}: no progress for {rule}')
