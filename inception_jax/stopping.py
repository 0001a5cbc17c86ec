"""How a training run stops when asked: SIGTERM (a preemption notice) and SIGINT (Ctrl-C).

Both ask for a checkpoint at the next step boundary. With several processes every process must
save the same step: JAX's preemption service agrees on it. It hears SIGTERM only, so a Ctrl-C
(which a terminal sends to every process of its foreground group, so to every process of a job
started there) is passed on to it as a SIGTERM of the process to itself; a process that was sent
SIGINT alone still stops with the others, all at the same step.

A preempted run says where it saved and ends normally (exit 0). An interrupted one raises
`Interrupted`, a `KeyboardInterrupt` whose message says where it saved and how to resume; a
second Ctrl-C stops at once, saying what was not saved and where a rerun resumes. `main`
prints the message alone (one line, process 0 of several) and exits with `EXIT_STATUS`
(`exit_interrupted`; a Ctrl-C outside the training loop, while starting or compiling, stops at
once). This module imports no JAX until a watcher is made: `main` handles a Ctrl-C met while
importing it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

from inception_jax import errors, faults

EXIT_STATUS = 130  # 128 + SIGINT: what a shell reports for a program ended by Ctrl-C


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, with a message that says what was saved and how to resume."""


def interrupted_at_once(workdir: str, step: Optional[int] = None, again: bool = False) -> str:
  """The line for a run stopped by Ctrl-C without saving (at `step`, where known)."""
  what = f'not saving step {step}' if step is not None else 'saving nothing'
  return (f'Interrupted{" again" if again else ""}: stopped at once, {what}; '
          f'{faults.resume_hint(workdir)}.')


class StopWatcher:
  """Turns SIGTERM and SIGINT into a request to checkpoint at the next step boundary (all
  processes agree on it); a second SIGINT raises `Interrupted` at once. Use as a context manager
  around the training loop, calling `should_stop(step)` after each step (signal handlers are
  installed from the main thread only).

  `exit_at_once` (set by the programs): the second SIGINT ends the process from the handler
  (`exit_interrupted`) rather than raise, since an exception raised by a signal handler is lost
  where it lands in a callback whose errors Python ignores (JAX's garbage-collection hook, say).
  From the Python API it raises `Interrupted` (in a notebook, ending the process would end the
  kernel)."""

  exit_at_once = False

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.preempted = self.interrupted = False
    self.step: Optional[int] = None
    self._previous = {}
    import jax  # deferred: no JAX until a watcher is made (the module's docstring)
    self._multihost = jax.process_count() > 1

  def __enter__(self) -> 'StopWatcher':
    if threading.current_thread() is threading.main_thread():
      if not self._multihost:  # with several processes, JAX's preemption service hears SIGTERM
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
      self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
    return self

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.preempted = True

  def _on_sigint(self, signum, frame):
    del signum, frame
    if self.interrupted:
      again = Interrupted(interrupted_at_once(self.workdir, self.step, again=True))
      if self.exit_at_once:
        exit_interrupted(again, self.workdir)
      raise again
    self.interrupted = True
    # To JAX's preemption service: its C++ handler of SIGTERM (which Python's getsignal does not
    # see) tells the others. Without the service SIGTERM's default action would end the process.
    if self._multihost and _preemption_service():
      signal.raise_signal(signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether to checkpoint `step` and stop (called after each step, by every process)."""
    self.step = step
    if self._multihost:
      from jax.experimental import multihost_utils  # deferred: as in __init__
      return multihost_utils.reached_preemption_sync_point(step)
    return self.preempted or self.interrupted

  def stopped(self, saved: str) -> str:
    """The line to print once the checkpoint `saved` (its directory) is finished."""
    if self.interrupted:
      return f'Interrupted: saved {saved}; rerun the same command to resume.'
    return f'Preempted: saved {saved}; exiting. Rerun the same command to resume.'

  def __exit__(self, *exc) -> None:
    for number, previous in self._previous.items():
      signal.signal(number, previous)


def _preemption_service() -> bool:
  from jax._src import distributed  # deferred: as in StopWatcher.__init__
  return distributed.global_state.preemption_sync_manager is not None


def exit_interrupted(error: KeyboardInterrupt, workdir: str) -> None:
  """Prints `error`'s message (an `Interrupted`), or for a bare KeyboardInterrupt that the run
  stopped at once, on stderr (process 0 of several only), and exits with `EXIT_STATUS` at once:
  nothing left is worth waiting for (Orbax's writers, JAX's shutdown barrier)."""
  message = str(error) if isinstance(error, Interrupted) else interrupted_at_once(workdir)
  if not errors.joined_others() or sys.modules['jax'].process_index() == 0:
    sys.stdout.flush()
    sys.stderr.write(message + '\n')
    sys.stderr.flush()
  os._exit(EXIT_STATUS)  # pylint: disable=protected-access
