"""Imported at start-up by the Python processes of a test that puts this directory first on
PYTHONPATH (test_watchdog.py): after SIGUSR1 the training loop's main thread stops for good at its
next step boundary, the process's other threads running on. A stuck main thread whose heartbeat
goes on: a wedged host (a hung input pipeline, filesystem or driver call)."""

import signal
import time


def _stall_at_the_next_step(signum, frame):
  del signum, frame
  from inception_jax import progress
  stepped = progress.Progress.stepped

  def stuck(self, step):
    stepped(self, step)
    while True:
      time.sleep(3600)
  progress.Progress.stepped = stuck


signal.signal(signal.SIGUSR1, _stall_at_the_next_step)
