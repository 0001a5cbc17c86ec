"""Faults a long run meets (a full disk, an unwritable workdir, a lost process), each turned into
a few lines that name it, the place and the next step.

A `Fault` is a `UserError` whose cause is outside the settings: the programs print its message
alone and exit with `EXIT_STATUS` (75, EX_TEMPFAIL: "try again", which is what rerunning the
same command does: it resumes from the latest checkpoint). They exit at once (`os._exit`),
without Python's shutdown, because the threads still running (Orbax's writers, the distributed
client's shutdown barrier) would otherwise print pages of tracebacks after the message or abort
the process; nothing they hold is worth waiting for: a checkpoint counts only once it is
finalized, and finalized checkpoints are on disk. From the Python API a `Fault` is an ordinary
exception.

What the programs do for each fault, and the tests that show it: README.md, "Reliability".
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import sys
from typing import Optional
import uuid

from inception_jax import errors, workdir as wd
from inception_jax.errors import UserError, chain

EXIT_STATUS = 75  # os.EX_TEMPFAIL

# How a full disk reads in the errors of Python (errno), TensorFlow's gfile and TensorStore
# (Orbax's writer: "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']").
_DISK_FULL = re.compile(r'No space left on device|Disk quota exceeded|'
                        rf"os_error_code='({errno.ENOSPC}|{errno.EDQUOT})'")
# How a lost peer reads in the error of a collective or of the distributed runtime.
_PEER_LOST = re.compile(r'Gloo .*failed|Connection reset by peer|heartbeat timeout|'
                        r'stopped sending heartbeats|Socket closed|NCCL (error|failure)|'
                        r'coordination service')
# How an object store that does not answer reads in the errors of gcsfs (aiohttp) and TensorStore,
# once their retries are spent.
_UNREACHABLE = re.compile(r'Cannot connect to host|Connection refused|Couldn\'t connect to server|'
                          r'ServerDisconnected|Connection reset|UNAVAILABLE|DEADLINE_EXCEEDED|'
                          r'Service Unavailable|Temporary failure in name resolution')


class Fault(UserError):
  """A fault of the machine, the disk or the cluster, described with what to do next."""
  exit_status = EXIT_STATUS


class DiskFull(Fault, OSError):
  pass


class PeerLost(Fault):
  pass


class StorageUnreachable(Fault):
  pass


def _text(error: BaseException) -> str:
  return ' '.join(f'{type(e).__name__}: {e}' for e in chain(error))


def is_disk_full(error: BaseException) -> bool:
  if any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain(error)):
    return True
  return bool(_DISK_FULL.search(_text(error)))


def is_peer_lost(error: BaseException) -> bool:
  return bool(_PEER_LOST.search(_text(error)))


def is_unreachable(error: BaseException, workdir: str) -> bool:
  """Whether `error` says that the object store holding `workdir` stopped answering."""
  return wd.is_remote(workdir) and bool(_UNREACHABLE.search(_text(error)))


def failed_path(error: BaseException) -> Optional[str]:
  """The file a failed write names, where its message names one."""
  for e in chain(error):
    if isinstance(e, OSError) and e.filename:
      return str(e.filename)
    found = re.search(r'(?:Failed writing|writing|file):? "?(/[^\s":]+|gs://[^\s":]+)', str(e))
    if found:
      return found[1]
  return None


_WORKDIR: list[str] = []  # the running job's, for messages from threads (`current_workdir`)
_SAVED: list[int] = []  # the newest checkpoint step the running job saw finished (`note_saved`)
# Steps the running job started saving, not yet seen finished, oldest first: the one record of the
# saves in flight, which `checkpoint.Checkpointer` keeps and reads (`saves_in_flight`).
_PENDING: list[int] = []


def set_current_workdir(workdir: str) -> None:
  _WORKDIR[:] = [workdir]


def current_workdir() -> Optional[str]:
  return _WORKDIR[0] if _WORKDIR else None


def note_saved(step: int) -> None:
  """Records that checkpoint `step` is finished (restored, or saved by this job)."""
  _SAVED[:] = [step]
  _PENDING[:] = [s for s in _PENDING if s > step]


def note_saving(step: int) -> None:
  """Records that this job started saving checkpoint `step` (it may not finish)."""
  _PENDING.append(step)


def saves_in_flight() -> list[int]:
  """The steps this job started saving and has not seen finished, oldest first."""
  return list(_PENDING)


def resume_hint(workdir: str, hosts: bool = False, look: bool = True) -> str:
  """'rerun the same command: it resumes from step N (DIR/checkpoints/N)', or 'from the start'.
  `look=False` (storage that does not answer): N is the newest step this job saw finished."""
  step = wd.latest_step(workdir) if look else (_SAVED[0] if _SAVED else None)
  if step is not None:
    later = '' if look else ' or a later one'
    where = f'it resumes from step {step}{later} ({wd.step_dir(workdir, step)})'
  elif not look and len(_PENDING) == 1:  # it may have finished just before the storage stopped
    where = (f'it resumes from step {_PENDING[0]} if that save finished '
             f'({wd.step_dir(workdir, _PENDING[0])}), otherwise from the start')
  elif not look and _PENDING:
    steps = ', '.join(map(str, _PENDING))
    where = (f'it resumes from the newest of steps {steps} whose save finished (in '
             f'{wd.checkpoints(workdir)}), or from the start if none did')
  else:
    where = 'no checkpoint was saved yet, so it starts again'
  return f'rerun the same command{" on every host" if hosts else ""}: {where}'


def disk_full(error: BaseException, workdir: str) -> DiskFull:
  path = failed_path(error) or workdir
  free = _free_bytes(workdir)
  left = f' ({mib(free)} free)' if free is not None else ''
  return DiskFull(f'the disk holding {workdir} is full{left}: writing {path} failed. Nothing '
                  f'saved before is lost. Free space there (or use a --workdir on a larger disk, '
                  f'copying this one), then {resume_hint(workdir)}.')


def unreachable(error: BaseException, workdir: str) -> StorageUnreachable:
  return StorageUnreachable(
      f'the storage holding {workdir} stopped answering ({errors.first_line(error, 200)}). '
      f'Nothing saved before is lost. Once it answers again, {resume_hint(workdir, look=False)}.')


def remove_empty(directories: list[str]) -> None:
  """Removes each of `directories` that is empty (a failed start leaves none it made)."""
  for directory in directories:
    with contextlib.suppress(OSError):
      os.rmdir(directory)


def missing_directories(path: str) -> list[str]:
  """The local directories that `makedirs(path)` would create, deepest first."""
  missing = []
  path = '' if wd.is_remote(path) else wd.absolute(path)
  while path and not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  return missing


def mib(size: float) -> str:
  return f'{size / 2**20:.{1 if size < 10 * 2**20 else 0}f} MiB'


def _free_bytes(path: str) -> Optional[int]:
  """The free bytes of the local disk holding `path`; None on object stores."""
  path = '' if wd.is_remote(path) else wd.absolute(path)
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  if not path:
    return None
  return shutil.disk_usage(path).free


def check_workdir(workdir: str, tidy: bool = True) -> None:
  """Fails before anything is compiled where `workdir` cannot be created or written (found by
  writing a file there, then removing it and any directory made for it). `tidy=False` keeps the
  directories made (several processes probing one shared workdir at once)."""
  probe = wd.join(workdir, f'.write_test.{uuid.uuid4().hex[:8]}')
  created = missing_directories(workdir) if tidy else []
  try:
    wd.makedirs(workdir)
    wd.write_atomically(probe, 'inception_jax checks that the workdir is writable\n')
    wd.remove(probe)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a storage client's error)
    remove_empty(created)
    if is_disk_full(e):
      raise DiskFull(f'--workdir={workdir}: its disk is full. Free space there or choose '
                     'another --workdir.') from None
    reason = getattr(e, 'strerror', None) or errors.first_line(e)
    raise UserError(f'--workdir={workdir} cannot be written ({reason}). '
                    'Choose a directory you can write, or fix its permissions.') from None
  remove_empty(created)  # made again when something is written: a failed start leaves none


def check_room(workdir: str, checkpoint_bytes: int) -> None:
  """Fails where the disk of `workdir` (local) lacks room for one checkpoint of
  `checkpoint_bytes` bytes."""
  free = _free_bytes(workdir)
  if free is not None and free < checkpoint_bytes:
    raise DiskFull(f'--workdir={workdir}: its disk has {mib(free)} free, less than one '
                   f'checkpoint of this run ({mib(checkpoint_bytes)}). Free space '
                   'there or choose another --workdir.')


# Orbax's warnings, from every thread that saves, that a preemption sync point was reached: the job
# says itself where it saved (stopping.StopWatcher).
_SAID_ALREADY = re.compile(r'Reached preemption sync point')


class _QuietFaults(logging.Filter):
  """Drops the errors that libraries log, traceback and all, for a fault that this module reports
  itself in a sentence (Orbax logs a full disk from each of its writers, gcsfs its last retry),
  and the warnings of `_SAID_ALREADY`."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.WARNING:
      return True
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += ' ' + _text(record.exc_info[1])
    return not (_DISK_FULL.search(text) or _UNREACHABLE.search(text)
                or _SAID_ALREADY.search(text))


def _closed_loop_noise(unraisable) -> bool:
  """A RuntimeError('Event loop is closed') from `call_soon_threadsafe`: TensorStore's callbacks
  reaching the event loop of an Orbax save that failed and closed it (hundreds follow a full
  disk, reported by TensorStore as unraisable)."""
  traceback = unraisable.exc_traceback
  while traceback is not None and traceback.tb_next is not None:
    traceback = traceback.tb_next
  return (unraisable.exc_type is RuntimeError and 'Event loop is closed' in
          str(unraisable.exc_value) and traceback is not None
          and 'asyncio' in traceback.tb_frame.f_code.co_filename)


def quiet_library_faults() -> None:
  """Installs `_QuietFaults` on the loggers of absl (Orbax logs through it), gcsfs and fsspec's
  read-ahead (its consumer logs a traceback of the error it then raises to the reader), and a
  `sys.unraisablehook` that drops `_closed_loop_noise`; idempotent. A logger's filter sees only
  the records of that logger, not its children's: each is named."""
  for name in ('absl', 'gcsfs', 'fsspec.prefetcher'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietFaults) for f in logger.filters):
      logger.addFilter(_QuietFaults())
  previous = sys.unraisablehook
  if getattr(previous, 'inception_jax', False):
    return

  def hook(unraisable):
    if not _closed_loop_noise(unraisable):
      previous(unraisable)
  hook.inception_jax = True
  sys.unraisablehook = hook


def exit_now(message: str, status: int = EXIT_STATUS) -> None:
  """Prints `error: message` and ends the process at once, skipping the interpreter's shutdown
  (see the module's docstring): for a fault met outside the main thread."""
  errors.fail(message, status, at_once=True)
