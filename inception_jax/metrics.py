"""Metric output: a progress line, `WORKDIR/metrics.jsonl` and TensorBoard scalars (process 0 only)."""

from __future__ import annotations

import datetime
import json
import os

from absl import logging


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      from flax.metrics import tensorboard
      self._tb = tensorboard.SummaryWriter(workdir)

  def truncate_after(self, step: int) -> None:
    """Drops entries past `step`: a resumed run rewrites them, so the log matches an unbroken run."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
    with open(self.path, 'w') as f:
      f.writelines(kept)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')
    for name, value in scalars.items():
      self._tb.scalar(name, value, step)
    self._tb.flush()
    if any(k.startswith('eval_') for k in scalars):
      logging.info('eval at step %d: %s', step,
                   ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()))
      print(f'eval  {step}: ' + '  '.join(f'{k} {v:.4f}' for k, v in scalars.items()
                                           if k.startswith('eval_')), flush=True)

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
