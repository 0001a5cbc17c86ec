"""Metric output: a progress line, `WORKDIR/metrics.jsonl` and TensorBoard scalars (process 0 only).

Files go through `tf.io.gfile`, so the workdir may be local or on GCS (gs://).
"""

from __future__ import annotations

import datetime
import json
import os

from absl import logging

from inception_jax import runtime

gfile = runtime.tensorflow().io.gfile


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      gfile.makedirs(workdir)
      from flax.metrics import tensorboard
      self._tb = tensorboard.SummaryWriter(workdir)

  def truncate_after(self, step: int) -> None:
    """Drops entries past `step`: a resumed run rewrites them, so the log matches an unbroken
    run."""
    if not self.enabled or not gfile.exists(self.path):
      return
    with gfile.GFile(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
    self._replace(''.join(kept))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    text = json.dumps({'step': step, **scalars}) + '\n'
    if gfile.exists(self.path):  # not every filesystem can append (gs:// cannot)
      with gfile.GFile(self.path) as f:
        text = f.read() + text
    self._replace(text)
    for name, value in scalars.items():
      self._tb.scalar(name, value, step)
    self._tb.flush()
    if any(k.startswith('eval_') for k in scalars):
      print(f'eval  {step}: ' + '  '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
          for k, v in scalars.items() if k.startswith('eval_')), flush=True)

  def _replace(self, text: str) -> None:
    """Rewrites the log atomically: a crash mid-write leaves the previous version."""
    with gfile.GFile(self.path + '.tmp', 'w') as f:
      f.write(text)
    gfile.rename(self.path + '.tmp', self.path, overwrite=True)

  def progress(self, step: int, total: int, scalars: dict[str, float], images_per_sec: float,
               eta_sec: float) -> None:
    self.write(step, {**scalars, 'images_per_sec': images_per_sec})
    if self.enabled:
      eta = datetime.timedelta(seconds=int(eta_sec))
      print(f'step {step}/{total}  loss {scalars["loss"]:.4f}  top1 {scalars["top1"]:.3f}  '
            f'lr {scalars["learning_rate"]:.4g}  {images_per_sec:.0f} img/s  ETA {eta}',
            flush=True)

  def say(self, message: str) -> None:
    """A line for the person watching (process 0), also in the log."""
    logging.info('%s', message)
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
