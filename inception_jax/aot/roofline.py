"""The estimate of a training step's speed: a roofline from XLA's FLOPs and bytes accessed
against the chip's peak FLOP/s and HBM bandwidth (not a measurement)."""

from __future__ import annotations

import math
from typing import Any, Optional


def estimate(report: dict[str, Any], where, job) -> Optional[dict[str, Any]]:
  """The roofline estimate of a training step (None without the chip's figures or costs), for
  the `report` of `job` compiled for `where` (a Target)."""
  train = report['train']
  if where.peak_flops is None or not train['flops']:
    return None
  compute_s = train['flops'] / where.peak_flops
  memory_s = (train['bytes_accessed'] or 0.0) / where.memory_bandwidth
  step_s = max(compute_s, memory_s)
  per_chip = report['per_chip_batch'] / step_s
  slice_rate = per_chip * report['chips']
  steps = job.num_steps
  model = train.get('optimal_seconds')
  plausible = model is not None and math.isfinite(model) and model >= compute_s
  return {
      'compute_bound_s': compute_s, 'memory_bound_s': memory_s, 'step_s': step_s,
      'bound': 'compute' if compute_s >= memory_s else 'memory',
      'flops_per_image': train['flops'] / report['per_chip_batch'],
      'img_per_s_per_chip': per_chip, 'img_per_s': slice_rate,
      'train_hours': steps * step_s / 3600, 'train_steps': steps,
      'epochs': steps / job.steps_per_epoch,
      # XLA's cost analysis counts the body of a loop once, whatever its trip count.
      'undercounted': bool(job.config.model.scan_blocks),
      'cost_model_step_s': model if plausible else None,
      'cost_model_note': (None if plausible else
                          'no figure' if model is None else f'{model:.3g} s: implausible, unused'),
  }
