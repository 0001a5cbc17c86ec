"""Training runs compared in words, computed from their logs (what the figures of
`inception_jax.plot` show, read off the numbers).

`compare_runs(workdirs, labels)` returns sentences on: whether any network died the paper's way
(Section 3.3: only zeros entering the average pool), how the zeros and the residual ratios moved,
the eval error at the first evaluation (how fast each run learned) and at the last, and whether the
final differences exceed what the eval set's size can resolve. Nothing is written in advance: a
run that dies, a scale that wins, or a tie all come out of the data.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from inception_jax.models import diagnostics

# A run counts as dead when half its pre-pool channels were zero for a whole batch, or nearly all
# its pre-pool activations were zero (the paper: "only zeros").
DEAD_CHANNELS = 0.5
DEAD_FRACTION = 0.99


@dataclasses.dataclass
class Run:
  """What the sentences need of one run's metrics.jsonl."""
  label: str
  evals: list[dict[str, Any]]  # rows with eval_top1, in order
  logs: list[dict[str, Any]]  # training log rows, in order

  @classmethod
  def read(cls, workdir: str, label: str) -> 'Run':
    from inception_jax.metrics import read_metrics  # TensorBoard's writer, loaded when needed
    rows = read_metrics(workdir)
    return cls(label, [r for r in rows if 'eval_top1' in r], [r for r in rows if 'loss' in r])

  def values(self, key: str) -> list[tuple[float, float]]:
    """(epoch, value) of a training metric, in order."""
    return [(r.get('epoch', r['step']), r[key]) for r in self.logs if key in r]

  def died(self) -> Optional[float]:
    """The epoch at which the run first looked dead, None if it never did."""
    channels = dict(self.values('dead_channels'))
    for epoch, fraction in self.values('dead_fraction'):
      if fraction >= DEAD_FRACTION or channels.get(epoch, 0.0) >= DEAD_CHANNELS:
        return epoch
    return None


def _error(row: dict[str, Any]) -> float:
  return 100 * (1 - row['eval_top1'])


def _epoch(row: dict[str, Any]) -> str:
  return f'epoch {row["epoch"]:.3g}' if 'epoch' in row else f'step {row["step"]}'


def _list(items: Sequence[str]) -> str:
  return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def dying(runs: Sequence[Run]) -> list[str]:
  recorded = [run for run in runs if run.values('dead_fraction')]
  if not recorded:
    return ['No run recorded the dying-network diagnostics (config.diagnostics).']
  dead = [(run, run.died()) for run in recorded]
  sentences = [f'{run.label} died at epoch {epoch:.3g}: from then on its last layer before the '
               f'average pool gave zeros (at least {DEAD_FRACTION:.0%} of its activations, or '
               f'{DEAD_CHANNELS:.0%} of its channels, for a whole batch).'
               for run, epoch in dead if epoch is not None]
  if not sentences:
    worst = max(recorded, key=lambda run: max(v for _, v in run.values('dead_fraction')))
    epoch, peak = max(worst.values('dead_fraction'), key=lambda ev: ev[1])
    channels = max((v for run in recorded for _, v in run.values('dead_channels')), default=0.0)
    sentences.append(
        f'No run died: the largest fraction of zeros entering the average pool was {peak:.2f} '
        f'({worst.label}, epoch {epoch:.3g}), and '
        + ('no channel was ever zero for a whole batch.' if channels == 0 else
           f'at most {channels:.0%} of the channels were zero for a whole batch.'))
  trends = []
  for run in recorded:
    values = run.values('dead_fraction')
    trends.append(f'{values[0][1]:.2f} -> {values[-1][1]:.2f} ({run.label})')
  sentences.append('Zeros entering the average pool, first log line -> last: '
                   + _list(trends) + '.')
  return sentences


def residuals(runs: Sequence[Run]) -> list[str]:
  parts = []
  for run in runs:
    grids = [f'{grid} {run.values(key)[-1][1]:.2f}'
             for grid, key in zip(diagnostics.GRIDS, diagnostics.RESIDUAL) if run.values(key)]
    if grids:
      parts.append(f'{run.label}: {", ".join(grids)}')
  if not parts:
    return []
  return ['How much the residual blocks change their input at the end, RMS(scale x branch) / '
          'RMS(input) per grid: ' + '; '.join(parts) + '.']


def eval_errors(runs: Sequence[Run]) -> list[str]:
  evaluated = [run for run in runs if run.evals]
  if not evaluated:
    return ['No run has evaluated yet.']
  sentences = []
  for which, pick in (('first', 0), ('last', -1)):
    rows = [(run, run.evals[pick]) for run in evaluated]
    best = min(rows, key=lambda rr: _error(rr[1]))
    listing = _list([f'{run.label} {_error(row):.1f}% ({_epoch(row)})' for run, row in rows])
    sentences.append(f'Top-1 eval error at the {which} evaluation: {listing}; lowest: '
                     f'{best[0].label}.')
  # Whether the final errors differ by more than the eval set can tell: two standard errors of
  # the difference of two proportions measured on n images each.
  finals = [(run, run.evals[-1]) for run in evaluated]
  if len(finals) > 1:
    n = min(row.get('eval_examples', 0) for _, row in finals)
    finals_error = sorted(_error(row) for _, row in finals)
    spread = finals_error[-1] - finals_error[0]
    if n:
      p = max(min(sum(finals_error) / len(finals_error) / 100, 1.0), 0.0)
      resolution = 100 * 2 * math.sqrt(2 * max(p * (1 - p), 1 / n) / n)
      verdict = ('larger than' if spread > resolution else 'within')
      sentences.append(f'The final errors span {spread:.1f} points, {verdict} what {n:,} eval '
                       f'images resolve (two standard errors of a difference: about '
                       f'{resolution:.1f} points).')
  return sentences


def compare_runs(workdirs: Sequence[str], labels: Optional[Sequence[str]] = None) -> list[str]:
  """Sentences comparing the runs in `workdirs` (see the module's docstring)."""
  labels = list(labels or [os.path.basename(os.path.normpath(w)) for w in workdirs])
  runs = [Run.read(w, label) for w, label in zip(workdirs, labels)]
  return [*dying(runs), *residuals(runs), *eval_errors(runs)]
