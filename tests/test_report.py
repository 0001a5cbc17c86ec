"""Runs compared in words: each sentence follows from the logs."""

import json

import pytest

from inception_jax import report


def workdir(tmp_path, name, fractions, errors, channels=None, ratios=None, examples=297):
  """A metrics.jsonl with a log row per dead fraction (epochs 1, 2, ...) and an eval row per
  error (%)."""
  directory = tmp_path / name
  directory.mkdir()
  rows = []
  for i, fraction in enumerate(fractions):
    row = {'step': i + 1, 'epoch': float(i + 1), 'loss': 1.0, 'dead_fraction': fraction,
           'dead_channels': (channels or [0.0] * len(fractions))[i]}
    if ratios:
      row.update({f'residual_ratio_{grid}': r for grid, r in zip(('35x35', '17x17', '8x8'),
                                                                  ratios)})
    rows.append(row)
  for i, error in enumerate(errors):
    rows.append({'step': 10 * (i + 1), 'epoch': 10.0 * (i + 1), 'eval_top1': 1 - error / 100,
                 'eval_examples': examples})
  (directory / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return str(directory)


def test_a_dying_run_is_named_with_its_epoch(tmp_path):
  alive = workdir(tmp_path, 'a', [0.2, 0.25, 0.3], [60, 20], ratios=(0.9, 0.7, 0.5))
  dead = workdir(tmp_path, 'b', [0.3, 0.995, 1.0], [80, 90], channels=[0, 0.1, 0.9])
  words = report.compare_runs([alive, dead], ['scale 0.1', 'scale 1.0'])
  assert words[0].startswith('scale 1.0 died at epoch 2: from then on')
  assert not any('scale 0.1 died' in w for w in words)
  assert words[1] == ('Zeros entering the average pool, first log line -> last: 0.20 -> 0.30 '
                      '(scale 0.1) and 0.30 -> 1.00 (scale 1.0).')
  assert words[2] == ('How much the residual blocks change their input at the end, RMS(scale x '
                      'branch) / RMS(input) per grid: scale 0.1: 35x35 0.90, 17x17 0.70, 8x8 0.50.')
  assert words[3] == ('Top-1 eval error at the first evaluation: scale 0.1 60.0% (epoch 10) and '
                      'scale 1.0 80.0% (epoch 10); lowest: scale 0.1.')
  assert words[4].startswith('Top-1 eval error at the last evaluation: scale 0.1 20.0% (epoch 20) '
                             'and scale 1.0 90.0% (epoch 20); lowest: scale 0.1.')
  assert words[5].startswith('The final errors span 70.0 points, larger than what 297 eval '
                             'images resolve')


@pytest.mark.parametrize('examples, verdict', [(297, 'within'), (50000, 'larger than')])
def test_final_differences_are_weighed_against_the_eval_set(tmp_path, examples, verdict):
  runs = [workdir(tmp_path, name, [0.1, 0.1], [30, error], examples=examples)
          for name, error in (('x', 10.0), ('y', 11.0))]
  words = report.compare_runs(runs)
  assert words[0] == ('No run died: the largest fraction of zeros entering the average pool was '
                      '0.10 (x, epoch 1), and no channel was ever zero for a whole batch.')
  assert words[-1].startswith(f'The final errors span 1.0 points, {verdict} what {examples:,} '
                              'eval images resolve')


def test_runs_without_diagnostics_or_evaluations(tmp_path):
  directory = tmp_path / 'plain'
  directory.mkdir()
  (directory / 'metrics.jsonl').write_text(json.dumps({'step': 1, 'loss': 2.0}) + '\n')
  assert report.compare_runs([str(directory)]) == [
      'No run recorded the dying-network diagnostics (config.diagnostics).',
      'No run has evaluated yet.']
