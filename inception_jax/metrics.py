"""Metric output: a progress line, `WORKDIR/metrics.jsonl` and TensorBoard scalars (process 0 only).

Files go through `inception_jax.workdir`, so the workdir may be local or on GCS (gs://). Both logs
describe one run however often it was resumed: entries past the checkpoint a run resumes from are
dropped
(the resumed run writes them again), a finished run evaluated again replaces its eval row, and
TensorBoard's events go to one file (`EventFile`).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import struct
import time
from typing import Optional

from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from inception_jax import workdir as wd

FILE = wd.METRICS  # in the workdir


def read_rows(path: str) -> Optional[list[dict]]:
  """The rows of the metrics.jsonl at `path` (local or gs://), None when there is no such file."""
  if not wd.exists(path):
    return None
  return [json.loads(line) for line in wd.read_text(path).splitlines() if line.strip()]


class EventFile:
  """TensorBoard scalars in one event file per workdir: a resumed or rerun job appends to the file
  it wrote before (repairing a record cut short by a crash), so plots show one run, not one
  overlaid trace per start. Where the filesystem cannot append (gs://), each start writes a new
  file, as TensorFlow's own writers do."""

  def __init__(self, workdir: str):
    existing = wd.glob(workdir, wd.EVENTS)
    if existing and not wd.is_remote(workdir):
      self.path = max(existing, key=os.path.getmtime)
      _drop_partial_record(self.path)
      self._file = open(self.path, 'ab')
    else:
      self.path = wd.join(workdir, wd.EVENTS.replace(
          '*', f'{time.time():.0f}.{socket.gethostname()}.inception_jax'))
      self._file = wd.path(self.path).open('wb')
    self._records = RecordWriter(self._file)
    if not existing:
      self._write(event_pb2.Event(file_version='brain.Event:2'))

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._records.write(event.SerializeToString())

  def restart(self, step: int) -> None:
    """Tells TensorBoard that the run starts again after `step`: it drops what it read of later
    steps (written before a crash, and written again now)."""
    self._write(event_pb2.Event(step=step + 1, session_log=event_pb2.SessionLog(
        status=event_pb2.SessionLog.START)))

  def scalars(self, step: int, scalars: dict[str, float]) -> None:
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values)))
    self._records.flush()

  def close(self) -> None:
    self._records.close()


def _drop_partial_record(path: str) -> None:
  """Truncates `path` after its last whole record (TFRecord framing: length, its CRC, the data,
  the data's CRC), so that what is appended can be read."""
  with open(path, 'rb') as f:
    data = f.read()
  end = 0
  while end + 12 <= len(data):
    record_end = end + 12 + struct.unpack('<Q', data[end:end + 8])[0] + 4
    if record_end > len(data):
      break
    end = record_end
  if end < len(data):
    with open(path, 'r+b') as f:
      f.truncate(end)


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
    """Drops entries past `step`: a resumed run rewrites them, so the log matches an unbroken
    run."""
    if not self.enabled:
      return
    rows = self._rows()
    kept = [row for row in rows if row['step'] <= step]
    if len(kept) < len(rows) or step > 0:
      self._events.restart(step)
    if len(kept) < len(rows):
      self._replace(kept)

  def has_eval(self, step: int) -> bool:
    """Whether the log holds an eval row of `step`."""
    return any(row['step'] == step and _kind(row) == 'eval' for row in self._rows())

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds a row to metrics.jsonl and TensorBoard. A row of the same step and kind (log or eval)
    replaces the one there (a finished run evaluated again); unchanged, it is not rewritten."""
    if not self.enabled:
      return
    row = {'step': step, **scalars}
    rows = self._rows()  # not every filesystem can append (gs:// cannot): rewritten whole
    same = [i for i, r in enumerate(rows) if r['step'] == step and _kind(r) == _kind(row)]
    if not (same and rows[same[0]] == json.loads(json.dumps(row))):
      if same:
        rows[same[0]] = row
      else:
        rows.append(row)
      self._replace(rows)
      self._events.scalars(step, scalars)
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

