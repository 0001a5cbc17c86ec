"""Metric output: a progress line, `WORKDIR/metrics.jsonl` and TensorBoard scalars (process 0 only).

Files go through `inception_jax.workdir`, so the workdir may be local or on an object store
(gs://). Both logs describe one run however often it was resumed: entries past the checkpoint a run
resumes from are dropped (the resumed run writes them again), a finished run evaluated again
replaces its eval row, and TensorBoard shows each step once (`EventFile`).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import struct
import time
from typing import Any, Optional

from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from inception_jax import workdir as wd
from inception_jax.errors import MissingError

FILE = wd.METRICS  # in the workdir


def read_rows(path: str) -> Optional[list[dict]]:
  """The rows of the metrics.jsonl at `path` (local or gs://), None when there is no such file."""
  if not wd.exists(path):
    return None
  return [json.loads(line) for line in wd.read_text(path).splitlines() if line.strip()]


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of `workdir`'s metrics.jsonl (for `inception_jax.plot` and `inception_jax.report`);
  an error naming the workdir when it has none, or an empty one."""
  path = wd.join(workdir, FILE)
  rows = read_rows(path)
  if rows is None:
    raise MissingError(f'{workdir} has no metrics.jsonl: pass training workdirs (the --workdir of '
                       '`python -m inception_jax.main`).')
  if not rows:
    raise MissingError(f'{path} is empty: the run has not logged yet.')
  return rows


class EventFile:
  """TensorBoard scalars of a workdir. Locally in one events file: a resumed or rerun job appends
  to the file it wrote before (repairing a record cut short by a crash). Where the filesystem
  cannot append (gs://), each start writes a new file, uploaded whole at each flush (as
  TensorFlow's writer does there), named to sort after the workdir's others: TensorBoard reads a
  run's files in name order.

  How each of TensorBoard's loaders drops the steps a resumed run logs again: every start writes a
  `SessionLog.START` (`restart`). The Python loader (`--load_fast=false`,
  `plugin_event_accumulator`) ignores the first START of a run, which marks its start, and at each
  later one drops what it read of the steps from the START's step on; the legacy
  `event_accumulator` drops them at every START. The Rust loader (`--load_fast=true`) ignores
  START: it drops a tag's values from step s on when a value of step s arrives, which the resumed
  run's own rows do."""

  def __init__(self, workdir: str):
    existing = wd.glob(workdir, wd.EVENTS)
    if existing and not wd.is_remote(workdir):
      self.path = existing[-1]  # the last TensorBoard reads
      records = _drop_partial_record(self.path)
      self._file = open(self.path, 'ab')
    else:
      self.path = wd.join(workdir, _next_name(existing))
      records = [r for path in existing for r in _records(wd.read_bytes(path))[0]]
      self._file = _Upload(self.path) if wd.is_remote(workdir) else open(self.path, 'wb')
    self._records = RecordWriter(self._file)
    if self.path not in existing:
      self._write(event_pb2.Event(file_version='brain.Event:2'))
    # Files from before every start wrote a START: the next one would be ignored as the first.
    self._started = any(event_pb2.Event.FromString(r).session_log.status ==
                        event_pb2.SessionLog.START for r in records)

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._records.write(event.SerializeToString())

  def restart(self, step: int) -> None:
    """Tells TensorBoard that the run starts (again) at `step`: it drops what it read of this and
    later steps (written before a crash, and written again now)."""
    for _ in range(1 if self._started else 2):  # a run's first START only marks its start
      self._write(event_pb2.Event(step=step, session_log=event_pb2.SessionLog(
          status=event_pb2.SessionLog.START)))
    self._started = True
    self._records.flush()

  def scalars(self, step: int, scalars: dict[str, float]) -> None:
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values)))
    self._records.flush()

  def close(self) -> None:
    self._records.close()


class _Upload(io.BytesIO):
  """A file on an object store that is written whole at each flush (objects cannot be appended
  to; a job that dies keeps what it flushed)."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path

  def flush(self) -> None:
    wd.write_atomically(self.path, self.getvalue())

  def close(self) -> None:
    if not self.closed:
      self.flush()
    super().close()


def _next_name(existing: list[str]) -> str:
  """A new events file's name: TensorFlow's, with a time in seconds after those of `existing`'s
  names, so that it sorts after them whatever the clocks of the hosts that wrote them."""
  stamp = int(time.time())
  for path in existing:
    parts = os.path.basename(path).split('.')
    if len(parts) > 3 and parts[3].isdigit():
      stamp = max(stamp, int(parts[3]) + 1)
  return f'events.out.tfevents.{stamp}.{socket.gethostname()}.inception_jax'


def _records(data: bytes) -> tuple[list[bytes], int]:
  """The whole records of TFRecord data (framing: length, its CRC, the data, the data's CRC), and
  where the last ends."""
  records, end = [], 0
  while end + 12 <= len(data):
    length = struct.unpack('<Q', data[end:end + 8])[0]
    if end + 12 + length + 4 > len(data):
      break
    records.append(data[end + 12:end + 12 + length])
    end += 12 + length + 4
  return records, end


def _drop_partial_record(path: str) -> list[bytes]:
  """Truncates the local file `path` after its last whole record, so that what is appended can be
  read; returns its records."""
  with open(path, 'rb') as f:
    data = f.read()
  records, end = _records(data)
  if end < len(data):
    with open(path, 'r+b') as f:
      f.truncate(end)
  return records


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = wd.join(workdir, FILE)
    self._events = None
    if enabled:
      wd.makedirs(workdir)
      self._events = EventFile(workdir)

  def _rows(self) -> list[dict]:
    return read_rows(self.path) or []

  def truncate_after(self, step: int) -> None:
    """Drops entries past `step`, where a run (re)starts: a resumed run rewrites them, so the log
    matches an unbroken run."""
    if not self.enabled:
      return
    rows = self._rows()
    kept = [row for row in rows if row['step'] <= step]
    self._events.restart(step + 1)
    if len(kept) < len(rows):
      self._replace(kept)

  def has_eval(self, step: int) -> bool:
    """Whether the log holds an eval row of `step`."""
    return any(row['step'] == step and _kind(row) == 'eval' for row in self._rows())

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds a row to metrics.jsonl and TensorBoard. A row of the same step and kind (log or eval)
    replaces the one there (a finished run evaluated again; TensorBoard drops that step and reads
    its rows again); unchanged, it is not rewritten."""
    if not self.enabled:
      return
    row = {'step': step, **scalars}
    rows = self._rows()  # not every filesystem can append (gs:// cannot): rewritten whole
    same = [i for i, r in enumerate(rows) if r['step'] == step and _kind(r) == _kind(row)]
    if not (same and rows[same[0]] == json.loads(json.dumps(row))):
      if same:
        rows[same[0]] = row
        self._events.restart(step)
      else:
        rows.append(row)
      self._replace(rows)
      for logged in (rows if same else [row]):
        if logged['step'] >= step:
          self._events.scalars(logged['step'], {k: v for k, v in logged.items() if k != 'step'})
    if any(k.startswith('eval_') for k in scalars):
      print(f'eval  {step}: ' + '  '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
          for k, v in scalars.items() if k.startswith('eval_')), flush=True)

  def _replace(self, rows: list[dict]) -> None:
    """Rewrites the log atomically: a crash mid-write leaves the previous version."""
    wd.write_atomically(self.path, ''.join(json.dumps(row) + '\n' for row in rows))

  def progress(self, step: int, total: int, scalars: dict[str, float], images_per_sec: float,
               eta_sec: float) -> None:
    self.write(step, {**scalars, 'images_per_sec': images_per_sec})
    if self.enabled:
      eta = datetime.timedelta(seconds=int(eta_sec))
      dead = f'  dead {scalars["dead_fraction"]:.3f}' if 'dead_fraction' in scalars else ''
      print(f'step {step}/{total}  loss {scalars["loss"]:.4f}  top1 {scalars["top1"]:.3f}  '
            f'lr {scalars["learning_rate"]:.4g}{dead}  {images_per_sec:.0f} img/s  ETA {eta}',
            flush=True)

  def say(self, message: str) -> None:
    """A line for the person watching (process 0), also in the log."""
    logging.info('%s', message)
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self._events is not None:
      self._events.close()


def _kind(row: dict) -> str:
  return 'eval' if any(k.startswith('eval_') for k in row) else 'log'

