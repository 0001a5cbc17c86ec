"""The figure command: the paper's kind of curves from training workdirs."""

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from inception_jax import plot

from train_utils import ROOT, environment, metrics


@pytest.fixture
def two_runs(straight, tmp_path):
  """The tiny run, and a copy of it that stopped after its first evaluation."""
  other = tmp_path / 'short'
  shutil.copytree(straight, other)
  rows = [r for r in metrics(straight) if r['step'] <= 8]
  with open(other / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return [straight, str(other)]


def test_one_line_per_run_per_panel_against_epochs(two_runs):
  fig = plot.figure(two_runs, labels=['full', 'short'])
  panels = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in panels] == [p[0] for p in plot.PANELS.values()]
  for ax in panels:
    assert [line.get_label() for line in ax.lines] == ['full', 'short']
    assert ax.get_xlabel() == 'epoch'
  top1 = panels[0]
  full = [r for r in metrics(two_runs[0]) if 'eval_top1' in r]
  x, y = top1.lines[0].get_data()
  assert list(x) == [r['epoch'] for r in full]
  assert list(y) == pytest.approx([100 * (1 - r['eval_top1']) for r in full])
  assert len(top1.lines[1].get_xdata()) == 1 and top1.lines[1].get_marker() == 'o'


def test_diagnostics_panels_appear_for_the_runs_that_recorded_them(two_runs, tmp_path):
  # A run without diagnostics (as an Inception-v4 run logs): the straight run's rows without them.
  bare = tmp_path / 'bare'
  os.makedirs(bare)
  with open(bare / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps({k: v for k, v in r.items() if k not in plot.PANELS
                                  or k in plot.BASIC}) + '\n' for r in metrics(two_runs[0]))
  fig = plot.figure([two_runs[0], str(bare)], labels=['resnet', 'bare'])
  panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
  assert list(panels) == [v[0] for v in plot.PANELS.values()]
  for key, (title, _, _) in plot.PANELS.items():
    expected = ['resnet', 'bare'] if key in plot.BASIC else ['resnet']
    assert [line.get_label() for line in panels[title].lines] == expected
  dead = panels[plot.PANELS['dead_fraction'][0]].lines[0].get_ydata()
  assert len(dead) > 1 and all(0.0 < d < 1.0 for d in dead)
  only_bare = plot.figure([str(bare)])
  assert [ax.get_title() for ax in only_bare.axes if ax.get_visible()] == [
      plot.PANELS[k][0] for k in plot.BASIC]


def test_command_writes_png_or_svg_and_names_a_workdir_without_metrics(two_runs, tmp_path):
  command = [sys.executable, '-m', 'inception_jax.plot', *two_runs]
  for name in ('curves.png', 'curves.svg'):
    output = tmp_path / 'figures' / name  # the directory is created
    result = subprocess.run([*command, f'--output={output}', '--size=900x500'], cwd=ROOT,
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    head = output.read_bytes()[:100]
    if name.endswith('png'):  # the PNG header's width and height
      assert head.startswith(b'\x89PNG') and struct.unpack('>II', head[16:24]) == (900, 500)
    else:
      assert b'<svg' in output.read_bytes()
  result = subprocess.run([*command, '--output=x.png', '--size=900'], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and 'WIDTHxHEIGHT' in result.stderr
  empty = tmp_path / 'empty'
  os.makedirs(empty)
  result = subprocess.run([*command, str(empty), f'--output={tmp_path / "x.png"}'], cwd=ROOT,
                          env=environment(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and f'{empty} has no metrics.jsonl' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 2


def test_feature_maps_draw_the_most_active_channels():
  import numpy as np
  maps = np.zeros((1, 5, 5, 6), np.float32)
  maps[..., 4] = 3.0
  maps[..., 1] = 2.0
  maps[..., 5] = 1.0
  fig = plot.feature_maps(maps, count=3, columns=2, title='Mixed_5b',
                          image=np.zeros((9, 9, 3), np.float32))
  shown = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in shown] == ['input', 'channel 4', 'channel 1', 'channel 5']
  assert fig.get_suptitle() == 'Mixed_5b'
  # A float image in [-1, 1] is drawn as uint8 (0 -> mid grey).
  assert shown[0].images[0].get_array().dtype == np.uint8
  assert shown[0].images[0].get_array()[0, 0, 0] == 127
  with pytest.raises(ValueError, match=r'takes \[height, width, channels\] activations .* got '
                     r'shape \(2, 5, 5, 6\)'):
    plot.feature_maps(np.zeros((2, 5, 5, 6)))
