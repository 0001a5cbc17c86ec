"""One job per workdir: a lease in `WORKDIR/lease.json`.

A training job takes the lease before it reads data or compiles (`Lease.acquire`), renews it from a
daemon thread every `RENEW_S` seconds and gives it back when it ends, whatever the reason (`close`).
The file names its holder: host, pid, start time, when it was last renewed, and a random token.

A second job on the same workdir stops before any compute, naming the holder (`WorkdirInUse`, a
fault: rerunning later is the fix). It takes the lease over, saying so in one line, where the holder
is dead: not renewed for `STALE_RENEWALS` renewal periods, or a pid of this host that no longer
runs. A holder whose lease was taken over (it was stalled past that time) stops when it next
renews, saying so.

Every change is conditional, so two jobs racing for a workdir cannot both win: on object stores
through the store's preconditions (create: `ifGenerationMatch=0`; renew, take over, give back:
`ifGenerationMatch=<the generation read>`); on local disk a complete file is linked into place
(which fails where one exists), and a lease is replaced or removed under a file lock only where it
still holds the token read.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import socket
import threading
import time
from typing import Callable, Optional

from absl import logging
from filelock import FileLock

from inception_jax import faults, workdir as wd

RENEW_S = float(os.environ.get('INCEPTION_JAX_LEASE_RENEW_S', 30))  # tests shorten it
STALE_RENEWALS = 3  # a lease not renewed for this many periods is a dead job's


class WorkdirInUse(faults.Fault):
  """Another job holds the workdir's lease."""


def _say(line: str) -> None:
  logging.info('%s', line)
  print(line, flush=True)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _age_s(iso: str) -> float:
  return time.time() - datetime.datetime.fromisoformat(iso).timestamp()


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  try:  # a zombie (killed, not yet reaped by its parent) is dead
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rpartition(')')[2].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


def describe(holder: dict) -> str:
  return f'host {holder["host"]}, pid {holder["pid"]}, started {holder["started"]}'


class _Local:
  """A lease file on local disk; its generation is the token it holds."""

  def __init__(self, path: str):
    self.path = path
    self._lock = FileLock(path + '.lock')

  def read(self) -> tuple[Optional[dict], Optional[str]]:
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except FileNotFoundError:
      return None, None
    return holder, holder['token']

  def _temporary(self, holder: dict) -> str:
    temporary = f'{self.path}.{holder["token"]}.tmp'
    try:
      with open(temporary, 'w') as f:
        json.dump(holder, f)
        f.flush()
        os.fsync(f.fileno())
    except BaseException:  # a full disk: no temporary file left behind
      with contextlib.suppress(OSError):
        os.unlink(temporary)
      raise
    return temporary

  def create(self, holder: dict) -> Optional[str]:
    temporary = self._temporary(holder)
    try:
      os.link(temporary, self.path)  # atomic, complete, and fails where a lease exists
    except FileExistsError:
      return None
    finally:
      os.unlink(temporary)
    return holder['token']

  def replace(self, holder: dict, generation: str) -> Optional[str]:
    with self._lock:
      if self.read()[1] != generation:
        return None
      os.replace(self._temporary(holder), self.path)
      return holder['token']

  def delete(self, generation: str) -> None:
    with self._lock:
      if self.read()[1] != generation:
        return
      os.unlink(self.path)
    # With no lease there, a job holding the old lock file meanwhile replaces nothing: safe to go.
    with contextlib.suppress(OSError):
      os.unlink(self._lock.lock_file)


class _Object:
  """A lease object on Cloud Storage (google-cloud-storage, which gcsfs depends on; it honours
  STORAGE_EMULATOR_HOST); its generation is the object's."""

  def __init__(self, path: str):
    # deferred: the GCS client loads only for a gs:// workdir
    from google.api_core import exceptions
    from google.cloud import storage
    bucket, _, name = path[len('gs://'):].partition('/')
    self.blob = storage.Client().bucket(bucket).blob(name)
    self._conflicts = (exceptions.PreconditionFailed, exceptions.NotFound)

  def read(self) -> tuple[Optional[dict], Optional[int]]:
    # deferred: the GCS client loads only for a gs:// workdir
    from google.api_core import exceptions
    try:
      data = self.blob.download_as_bytes()  # sets blob.generation to the generation read
    except exceptions.NotFound:
      return None, None
    return json.loads(data), self.blob.generation

  def _upload(self, holder: dict, generation: int) -> Optional[int]:
    try:
      self.blob.upload_from_string(json.dumps(holder), content_type='application/json',
                                   if_generation_match=generation)
    except self._conflicts:
      return None
    return self.blob.generation

  def create(self, holder: dict) -> Optional[int]:
    return self._upload(holder, 0)

  def replace(self, holder: dict, generation: int) -> Optional[int]:
    return self._upload(holder, generation)

  def delete(self, generation: int) -> None:
    if self.read()[1] != generation:  # taken over (and fake-gcs-server ignores the precondition)
      return
    try:
      self.blob.delete(if_generation_match=generation)
    except self._conflicts:
      pass


class Lease:
  """The lease of `workdir` for this process. `say` prints a line for the person watching;
  `on_lost(message)` is called from the renewing thread where another job took the lease over
  (default: print the message and exit at once, `faults.exit_now`)."""

  def __init__(self, workdir: str, renew_s: float = RENEW_S,
               say: Callable[[str], None] = _say,
               on_lost: Callable[[str], None] = faults.exit_now):
    self.workdir, self.renew_s, self.say, self.on_lost = workdir, renew_s, say, on_lost
    path = wd.join(wd.absolute(workdir), wd.LEASE)
    self._store = _Object(path) if wd.is_remote(path) else _Local(path)
    self.holder = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': _now(),
                   'renewed': _now(), 'token': secrets.token_hex(8)}
    self._generation = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def acquire(self) -> 'Lease':
    """Takes the lease (over, from a dead holder) and starts renewing it; raises `WorkdirInUse`
    where a live job holds it."""
    wd.makedirs(self.workdir)
    for _ in range(10):  # each try fails only because another job changed the lease meanwhile
      holder, generation = self._store.read()
      if holder is None:
        self._generation = self._store.create(self.holder)
        if self._generation is not None:
          break
        continue
      dead = self._dead(holder)
      if dead is None:
        free = datetime.datetime.fromisoformat(holder['renewed']) + datetime.timedelta(
            seconds=self.stale_s)
        raise WorkdirInUse(
            f'--workdir={self.workdir} is in use by another job ({describe(holder)}, lease '
            f'renewed {_age_s(holder["renewed"]):.0f} s ago). Stop it or choose another '
            f'--workdir; if that job is dead, rerun after {free:%H:%M:%S %Z} (its lease unrenewed '
            f'for {self.stale_s:.0f} s) and this job takes the workdir over.')
      self._generation = self._store.replace(self.holder, generation)
      if self._generation is not None:
        self.say(f'Took over the lease of {self.workdir} from a dead job ({describe(holder)}): '
                 f'{dead}.')
        break
    else:
      raise WorkdirInUse(f'--workdir={self.workdir}: jobs keep changing its lease; rerun.')
    self._thread = threading.Thread(target=self._renew_every, name='lease', daemon=True)
    self._thread.start()
    return self

  @property
  def stale_s(self) -> float:
    return STALE_RENEWALS * self.renew_s

  def _dead(self, holder: dict) -> Optional[str]:
    """Why `holder` is dead, None where it may be alive."""
    if holder['host'] == socket.gethostname() and not _pid_alive(int(holder['pid'])):
      return f'pid {holder["pid"]} no longer runs on this host'
    age = _age_s(holder['renewed'])
    if age > self.stale_s:
      return f'not renewed for {age:.0f} s (more than {self.stale_s:.0f} s)'
    return None

  def renew(self) -> bool:
    """Renews the lease; False where another job took it over."""
    holder = dict(self.holder, renewed=_now())
    generation = self._store.replace(holder, self._generation)
    if generation is None:
      return False
    self.holder, self._generation = holder, generation
    return True

  def _renew_every(self) -> None:
    while not self._stop.wait(self.renew_s):
      try:
        held = self.renew()
      except Exception as e:  # pylint: disable=broad-except  (retried: a later renewal may work)
        logging.warning('Renewing the lease of %s failed: %s', self.workdir, e)
        continue
      if not held and not self._stop.is_set():
        taker, _ = self._store.read()
        by = f' by {describe(taker)}' if taker else ''
        self.on_lost(f'{self.workdir}: another job took this job\'s lease over{by} (this job '
                     f'had not renewed it for {self.stale_s:.0f} s); stopping so that only one '
                     'job writes the workdir.')
        return

  def release(self, give_back: bool = True) -> None:
    """Stops renewing and gives the lease back (where this job still holds it; `give_back=False`:
    leaves it to expire, where the store cannot be reached)."""
    self._stop.set()
    if self._thread is not None and give_back:  # else not waited for: it may wait for the store
      self._thread.join()
      self._thread = None
    if self._generation is not None and give_back:
      self._store.delete(self._generation)
      self._generation = None

  def __enter__(self) -> 'Lease':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


KEY = 'inception_jax/lease'  # in JAX's distributed key-value store: process 0's outcome
OK = 'taken'


def for_job(workdir: str, process_index: int, process_count: int) -> Optional[Lease]:
  """The lease of a job's workdir, taken by process 0 for all processes (None elsewhere). With
  several processes, the others learn through JAX's distributed key-value store whether it was
  taken, and stop as well where it was not."""
  if wd.is_remote(workdir) and wd.scheme(workdir) != 'gs':
    logging.warning('No lease on %s: only local and gs:// workdirs have one; make sure that no '
                    'other job writes there.', workdir)
    return None
  if process_index == 0:
    try:
      held = Lease(workdir).acquire()
    except faults.Fault as e:
      if process_count > 1:
        _client().key_value_set(KEY, str(e), allow_overwrite=True)
      raise
    if process_count > 1:
      _client().key_value_set(KEY, OK, allow_overwrite=True)
    return held
  outcome = _client().blocking_key_value_get(KEY, 300_000)
  if outcome != OK:
    raise WorkdirInUse(f'process 0 stopped: {outcome}')
  return None


def _client():
  from jax._src import distributed  # the client JAX connected
  return distributed.global_state.client
