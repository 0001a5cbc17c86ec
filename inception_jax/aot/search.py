"""The search of the largest per-chip batch whose train step fits (`find_max_batch`): a few
compiles, each candidate predicted from the memory measured so far."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from inception_jax.aot.chips import GIB
from inception_jax.aot.compile import compile_job, data_source
from inception_jax.aot.environment import Target, target


def find_max_batch(config, topology: str | Target, batch_step: int = 8,
                   progress: Callable[[str], None] = lambda line: None,
                   limit: int = 1 << 16) -> dict[str, Any]:
  """The report at the largest per-chip batch whose train step fits, to `batch_step` images per
  chip (below `batch_step`, to one image): a search from the config's batch that compiles a few
  candidates, XLA deciding each. The next candidate is where the memory measured so far,
  extrapolated (the line through the two largest batches that fit; with one, a fixed part plus
  temporaries in proportion to the batch), would fill the chip, kept strictly between the largest
  batch known to fit and the smallest known not to; after a wrong prediction the search bisects
  once. The batch never exceeds `limit` per chip nor the dataset's training examples.
  `progress` gets a line per compile. The report says `fits: False` when not even 1 image per
  chip fits, and carries the error when a candidate fails to compile for another reason."""
  where = target(topology) if isinstance(topology, str) else topology
  chips = len(where.devices)
  search = _Search(config, where, progress,
                   min(limit, data_source(config, where.devices).train_size // chips))
  per_chip, expected = min(max(config.batch_size // chips, 1), search.limit), None
  while per_chip is not None:
    report = search.compile(per_chip)
    if 'error' in report and not report.get('out_of_memory'):
      return search.result(report, batch_step)  # no batch size fixes this error
    missed, expected = expected is not None and report['fits'] != expected, None
    if search.low == 0:  # nothing fits yet: halve, down to one image
      if search.high == 1:
        return search.result(report, batch_step)
      per_chip = search.high // 2
    else:
      per_chip, expected = search.next_candidate(batch_step, missed)
  return search.result(search.complete(), batch_step, at_limit=search.high is None)


@dataclasses.dataclass
class _Search:
  """The batches tried so far (per chip -> report), the largest known to fit (`low`, 0: none)
  and the smallest known not to (`high`, None: none)."""
  config: Any
  where: Target
  progress: Callable[[str], None]
  limit: int  # the largest batch per chip tried
  tried: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
  low: int = 0
  high: Optional[int] = None

  @property
  def chips(self) -> int:
    return len(self.where.devices)

  def compile(self, per_chip: int) -> dict[str, Any]:
    """The train step's report at `per_chip` images per chip, noted and told to `progress`."""
    trial = self.config.copy_and_resolve_references()
    trial.batch_size = per_chip * self.chips
    report = self.tried[per_chip] = compile_job(trial, self.where, eval_step=False)
    self.progress(f'{per_chip:>6} per chip: ' + _outcome(report))
    if report['fits']:
      self.low = per_chip
    else:
      self.high = per_chip
    return report

  def next_candidate(self, batch_step: int, missed: bool) -> tuple[Optional[int], Optional[bool]]:
    """The next batch to try (None: the search is done, the answer is `low`) and whether it is
    expected to fit (None: no expectation), once some batch fits."""
    ceiling = self.high if self.high is not None else self.limit + 1
    grid = [b for b in range(self.low + 1, ceiling) if b % batch_step == 0 or b < batch_step]
    if not grid:
      return None, None  # high does not fit, or low is the limit
    if missed and self.high is not None:
      return grid[len(grid) // 2], None  # the prediction was wrong: bisect once
    guess = self.predicted()
    if guess < grid[0]:
      return grid[0], False
    if guess > grid[-1]:
      return grid[-1], None if self.high is None else True
    return max(b for b in grid if b <= guess), True

  def predicted(self) -> int:
    """Where the memory of the batches that fit, extrapolated, fills the chip."""
    capacity = self.where.memory_bytes / (self.chips if self.where.shared_memory else 1)
    sizes = sorted(b for b, r in self.tried.items() if r['fits'])[-2:]
    peaks = [self.tried[b]['peak_bytes'] for b in sizes]
    if len(sizes) == 2 and peaks[1] > peaks[0]:
      slope = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    else:
      # deferred: inception_jax.train imports JAX, which must start after prepare_environment
      from inception_jax.train import PREFETCH
      last = self.tried[sizes[-1]]
      slope = (last['train']['temp_bytes'] + (1 + PREFETCH) * last['train_batch_bytes']) / sizes[-1]
    return sizes[-1] + int((capacity - peaks[-1]) / slope) if slope > 0 else 2 * sizes[-1]

  def complete(self) -> dict[str, Any]:
    """The full report (the eval step too) at the largest batch that fits."""
    best = self.config.copy_and_resolve_references()
    best.batch_size = self.low * self.chips
    return compile_job(best, self.where, compiled_train=self.tried[self.low])

  def result(self, report: dict[str, Any], batch_step: int, **more) -> dict[str, Any]:
    """`report` with the search's record: each batch tried, whether it fits."""
    searched = {str(k): v['fits'] for k, v in sorted(self.tried.items())}
    return dict(report, searched=searched, batch_step=batch_step, **more)


def _outcome(report: dict[str, Any]) -> str:
  """A candidate's progress line: fits, does not fit or does not compile."""
  if report['fits']:
    return (f'fits ({report["peak_bytes"] / GIB:.2f} GiB, compiled in '
            f'{report["train"]["compile_s"]:.0f} s)')
  if report.get('out_of_memory'):
    return f'does not fit ({report["compile_s"]:.0f} s)'
  if 'error' in report:
    return f'does not compile: {report["error"]}'
  return f'does not fit ({report["peak_bytes"] / GIB:.2f} GiB)'
