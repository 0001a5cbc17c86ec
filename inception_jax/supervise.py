"""A parent for each process of a multi-process job, so that losing the coordinator ends in a
sentence.

JAX's distributed client ends its process at once where it loses the coordination service (the
coordinator, process 0, died, or its host went down): glog's fatal line, a C++ stack trace and
Python's dump of every thread, with SIGABRT, before Python can act. `python -m inception_jax.main`
therefore runs a multi-process job's process as a child of a small parent that imports no
accelerator runtime, passes its output through and SIGTERM (preemption) and SIGHUP on, and,
where the child dies that way, prints what happened and what to do instead of the dump, exiting
with `faults.EXIT_STATUS`. The child dies with its parent (`PR_SET_PDEATHSIG`). Other faults,
including a lost peer other than the coordinator, are reported by the child itself
(`distributed.PeerWatch`).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from typing import Optional, Sequence

from inception_jax import faults

CHILD = 'INCEPTION_JAX_SUPERVISED'  # set in the child's environment
# glog's line for the distributed client's fatal error (client.h: "Terminating process because
# the JAX distributed service detected fatal errors ... absl::Status: UNAVAILABLE: ...").
FATAL = re.compile(r'^F\d{4} .*Terminating process because the JAX distributed service')
PRELUDE = re.compile(r'^E\d{4} .*(Polled an error from coordination service|preemption barrier)')


def wanted() -> bool:
  return os.environ.get(CHILD) != '1'


def _die_with_parent() -> None:
  try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (AttributeError, OSError):  # not Linux: the child may outlive a killed parent
    pass


def run(args: Sequence[str], workdir: str, coordinator: Optional[str]) -> int:
  """Runs `python -m inception_jax.main ARGS` as a child; returns the exit status to use."""
  child = subprocess.Popen([sys.executable, '-m', 'inception_jax.main', *args],
                           env=dict(os.environ, **{CHILD: '1'}), stderr=subprocess.PIPE,
                           preexec_fn=_die_with_parent)
  for number in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(number, lambda number, frame: child.send_signal(number))
  # Ctrl-C reaches the child itself (the same process group): forwarding it would send two.
  signal.signal(signal.SIGINT, lambda number, frame: None)
  fatal, held = None, []
  for line in iter(child.stderr.readline, b''):
    text = line.decode(errors='replace')
    if fatal is None and FATAL.match(text):
      fatal = text
    elif fatal is None and PRELUDE.match(text):
      held.append(text)  # printed unless the fatal line follows
    elif fatal is None:  # what follows the fatal line is the dump
      sys.stderr.write(''.join(held) + text)
      sys.stderr.flush()
      held = []
  sys.stderr.write('' if fatal else ''.join(held))
  status = child.wait()
  if fatal is None:
    return status if status >= 0 else 128 - status
  sys.stderr.write(f'error: {lost_service_message(fatal, workdir, coordinator)}\n')
  sys.stderr.flush()
  return faults.EXIT_STATUS


def lost_service_message(fatal: str, workdir: str, coordinator: Optional[str]) -> str:
  status = fatal.partition('absl::Status: ')[2].strip()
  reason = re.split(r'(?<=\.) ', status, maxsplit=1)[0] if status else 'no reason given'
  where = f' at {coordinator}' if coordinator else ''
  if status.startswith('DEADLINE_EXCEEDED'):  # while joining: nobody answered
    what = f'the coordinator (process 0{where}) could not be reached in time'
  elif re.search(r'leader|Socket closed|Failed to send RPC to coordination service', status):
    what = f'the coordinator (process 0{where}) is gone'
  else:
    what = 'another process of the job died'
  return (f'{what}: JAX\'s distributed client lost the coordination service ({reason}); this '
          f'process stopped. Once every host is back, {faults.resume_hint(workdir, hosts=True)}.')
