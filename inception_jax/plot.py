"""Draws the paper's kind of figure (Figs. 21-26) from training workdirs' metrics.jsonl.

    python -m inception_jax.plot WORKDIR [WORKDIR ...] --output=curves.png [--labels=A,B]
        [--metrics=eval_top1,dead_fraction] [--size=1600x1000]

One panel per metric, every run overlaid: eval top-1 and top-5 error (%, the averaged parameters)
against epoch, the training loss and the learning rate, and the dying-network diagnostics
(`inception_jax/models/diagnostics.py`) of the runs that recorded them. Epochs come from each row's
`epoch` (the job records it); rows of older runs without it are drawn against steps. PNG by
default, SVG or PDF by the file's extension. Works on a run still in progress and on one with a
single eval point (drawn as a marker). Workdirs may be local or on GCS (gs://).
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional, Sequence

from absl import flags
import numpy as np

from inception_jax import cli, errors, startup, workdir as wd
from inception_jax.models import diagnostics

_error = lambda v: 100 * (1 - v)
_same = lambda v: v
_ratio = 'RMS(scale x branch) / RMS(input)'
# metric key -> (panel title, y label, how a logged value becomes the plotted one)
PANELS = {
    'eval_top1': ('Top-1 error (eval)', 'error (%)', _error),
    'eval_top5': ('Top-5 error (eval)', 'error (%)', _error),
    'loss': ('Training loss', 'loss', _same),
    'learning_rate': ('Learning rate', 'learning rate', _same),
    'dead_fraction': ('Zeros entering the average pool', 'fraction of activations', _same),
    'dead_channels': ('Channels zero for a whole batch', 'fraction of channels', _same),
    **{f'residual_ratio_{grid}': (f'Residual ratio, {grid} blocks', _ratio, _same)
       for grid in diagnostics.GRIDS},
}
BASIC = ('eval_top1', 'eval_top5', 'loss', 'learning_rate')  # drawn by default, then diagnostics
FORMATS = ('png', 'svg', 'pdf')
DPI = 100


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], str]:
  """(x, y, x's unit) of metric `key`: epochs where the rows have them, else steps."""
  chosen = [r for r in rows if key in r]
  unit = 'epoch' if chosen and all('epoch' in r for r in chosen) else 'step'
  convert = PANELS[key][2]
  return [r[unit] for r in chosen], [convert(r[key]) for r in chosen], unit


def figure(workdirs: Sequence[str], labels: Optional[Sequence[str]] = None,
           metrics: Optional[Sequence[str]] = None, size: Optional[tuple[int, int]] = None):
  """A matplotlib Figure with one panel per metric and one line per run. `metrics` default: the
  BASIC panels, then every diagnostic that some run recorded. `size`: (width, height) in pixels
  at DPI; default 640x400 per panel."""
  labels = list(labels or [os.path.basename(os.path.normpath(w)) for w in workdirs])
  if len(labels) != len(workdirs):
    raise errors.ConfigError(f'--labels has {len(labels)} names for {len(workdirs)} workdirs.')
  unknown = [m for m in metrics or () if m not in PANELS]
  if unknown:
    raise errors.ConfigError(f'--metrics: unknown {", ".join(unknown)}; choose from '
                             f'{", ".join(PANELS)}.')
  from inception_jax.metrics import read_metrics  # TensorBoard's writer, loaded when first needed
  runs = [read_metrics(w) for w in workdirs]
  if metrics is None:
    metrics = [*BASIC, *(k for k in PANELS if k not in BASIC
                         and any(k in row for rows in runs for row in rows))]
  columns = min(2 if len(metrics) <= 4 else 3, len(metrics))
  rows_count = -(-len(metrics) // columns)
  width, height = size or (640 * columns, 400 * rows_count)
  fig, axes = _figure((width, height), rows_count, columns)
  for ax, key in zip(axes.flat, metrics):
    title, ylabel, _ = PANELS[key]
    units = set()
    for label, rows in zip(labels, runs):
      x, y, unit = series(rows, key)
      if x:
        units.add(unit)
        ax.plot(x, y, marker='o' if len(x) == 1 else None, label=label)
    ax.set_title(title)
    ax.set_xlabel(' or '.join(sorted(units)) or 'epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if key == 'learning_rate':
      ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
    if key.startswith('dead_'):
      ax.set_ylim(-0.02, 1.02)
  for ax in list(axes.flat)[len(metrics):]:
    ax.set_visible(False)
  # One legend for the figure (every panel draws the runs in the same colours), below the panels.
  handles = {}
  for ax in axes.flat:
    for line in ax.lines:
      handles.setdefault(line.get_label(), line)
  if handles:  # none before a run's first log line
    fig.legend(handles.values(), handles.keys(), loc='outside lower center',
               ncol=min(len(handles), 4))
  return fig


def _figure(size: tuple[int, int], rows: int, columns: int):
  """A figure of `size` pixels with a grid of axes, made without pyplot: no backend is chosen and
  no figure is kept alive by pyplot, so it works alike in programs and notebooks (where it shows
  as the value of a cell)."""
  # deferred: matplotlib loads only to draw
  from matplotlib.figure import Figure
  fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout='constrained')
  return fig, fig.subplots(rows, columns, squeeze=False)


def feature_maps(activations: Any, count: int = 16, columns: int = 8, title: str = '',
                 image: Any = None):
  """A figure of the `count` most active channels (largest mean) of a feature map, [height,
  width, channels] (or one image of a batch, [1, ...]), each drawn on its own scale; `image`, when
  given, is drawn first (uint8, or floats in [-1, 1] as the networks take them)."""
  maps = np.asarray(activations, np.float32)
  if maps.ndim == 4 and maps.shape[0] == 1:
    maps = maps[0]
  if maps.ndim != 3:
    raise errors.ConfigError(f'feature_maps takes [height, width, channels] activations (or one '
                             f'image of a batch), got shape {maps.shape}.')
  channels = np.argsort(-maps.mean(axis=(0, 1)), kind='stable')[:count]
  panels = len(channels) + (image is not None)
  rows = -(-panels // columns)
  fig, axes = _figure((160 * columns, 170 * rows + 40), rows, columns)
  axes = list(axes.flat)
  if image is not None:
    picture = np.asarray(image)
    if picture.dtype != np.uint8:
      picture = np.clip((picture + 1.0) * 127.5, 0, 255).astype(np.uint8)
    axes[0].imshow(picture[0] if picture.ndim == 4 else picture)
    axes[0].set_title('input', fontsize=9)
  for ax, channel in zip(axes[image is not None:], channels):
    ax.imshow(maps[..., channel], cmap='viridis')
    ax.set_title(f'channel {channel}', fontsize=9)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes[panels:]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  return fig


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`); the workdirs are its
  arguments."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('output', None, 'FILE.png (or .svg, .pdf).', **define)
  flags.DEFINE_list('labels', None, 'Comma-separated names of the runs (default: the workdirs\' '
                    'names).', **define)
  flags.DEFINE_string('size', None, 'WIDTHxHEIGHT in pixels (default: 640x400 per panel).',
                      **define)
  flags.DEFINE_list('metrics', None, f'Comma-separated panels, of {", ".join(PANELS)} (default: '
                    'the first four, then the diagnostics the runs recorded).', **define)
  flags.mark_flags_as_required(['output'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  workdirs = list(argv[1:])
  if not workdirs:
    raise errors.ConfigError('Name the training workdirs after the flags: python -m '
                             'inception_jax.plot WORKDIR [WORKDIR ...] --output=curves.png.')
  startup.start()
  extension = os.path.splitext(FLAGS.output)[1].lstrip('.').lower() or 'png'
  if extension not in FORMATS:
    raise errors.ConfigError(f'--output {FLAGS.output}: the formats are {", ".join(FORMATS)} (by '
                             'extension).')
  size = None
  if FLAGS.size:
    try:
      size = tuple(int(n) for n in FLAGS.size.lower().split('x'))
    except ValueError:
      size = ()
    if len(size) != 2 or min(size) < 100:
      raise errors.ConfigError(f'--size {FLAGS.size}: give WIDTHxHEIGHT in pixels, each at least '
                               '100, e.g. --size=1600x1000.')
  for workdir in workdirs:
    wd.check(workdir, 'WORKDIR')
  wd.check(FLAGS.output, '--output')
  fig = figure(workdirs, FLAGS.labels, FLAGS.metrics, size)
  save(fig, FLAGS.output, extension)
  print(f'Wrote {FLAGS.output}')


def save(fig, path: str, extension: str) -> None:
  """Writes `fig` to `path` (local or gs://), creating its directory."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=extension, dpi=DPI)
  try:
    if os.path.dirname(path):
      wd.makedirs(os.path.dirname(path))
    wd.write_atomically(path, buffer.getvalue())
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a storage client's error)
    raise errors.UserError(f'cannot write {path}: {errors.first_line(e)}; pass another '
                           '--output.') from e


if __name__ == '__main__':
  cli.run(define_flags, main)
