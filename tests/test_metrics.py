"""inception_jax.metrics: metrics.jsonl and TensorBoard's view of a run resumed after crashes, as
both of TensorBoard's Python loaders read it, on local disk and on an emulated bucket."""

import os

import pytest
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator

from inception_jax import errors, metrics, workdir as wd
from inception_jax.metrics import MetricWriter

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"


def local_copy(root, tmp_path):
  """`root` itself where local; a bucket's events files copied to a local directory (TensorBoard's
  loaders read gs:// through TensorFlow, which cannot reach the emulator), names kept."""
  if not wd.is_remote(root):
    return root
  local = tmp_path / 'copy'
  local.mkdir(exist_ok=True)
  for path in wd.glob(root, wd.EVENTS):
    (local / os.path.basename(path)).write_bytes(wd.read_bytes(path))
  return str(local)


def tensorboard(directory, loader):
  """{tag: [(step, value)]} as TensorBoard's `loader` shows the run in `directory`."""
  if loader == 'plugin':  # TensorBoard's loader since 2.x: scalars stored as tensors
    accumulator = plugin_event_accumulator.EventAccumulator(directory)
    accumulator.Reload()
    return {tag: [(e.step, float(e.tensor_proto.float_val[0])) for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()['tensors']}
  accumulator = event_accumulator.EventAccumulator(directory)
  accumulator.Reload()
  return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()['scalars']}


def run(root, start, last, attempt, crash=True):
  """A start of the job from checkpoint `start` that logs steps start+2, ... `last` (`loss` every 2
  steps, `eval_top1` every 4) and dies there (or, `crash=False`, ends normally)."""
  writer = MetricWriter(root)
  writer.truncate_after(start)
  for step in range(start + 2, last + 1, 2):
    writer.write(step, {'loss': attempt + step / 100})
    if step % 4 == 0:
      writer.write(step, {'eval_top1': attempt + step / 1000})
  if not crash:
    writer.close()


@pytest.mark.parametrize('where', ['local', 'bucket'])
@pytest.mark.parametrize('loader', ['plugin', 'legacy'])
@pytest.mark.parametrize('resumes', [0, 1, 2, 3])
def test_each_step_shows_once_however_often_the_run_resumed(where, loader, resumes, tmp_path,
                                                            request):
  root = str(tmp_path / 'run') if where == 'local' else request.getfixturevalue('bucket') + '/run'
  # Start i resumes from the checkpoint at step 4i and dies at step 4i + 6 (after logging steps the
  # next start logs again); the last start resumes from step 4 * resumes and finishes at step 20.
  starts = [4 * i for i in range(resumes + 1)]
  for attempt, start in enumerate(starts):
    run(root, start, start + 6 if attempt < resumes else 20, attempt, crash=attempt < resumes)
  # Each step's value is the one the last start that logged it wrote.
  owner = lambda step: max(a for a, s in enumerate(starts) if s < step)
  expected = {'loss': [(s, pytest.approx(owner(s) + s / 100)) for s in range(2, 21, 2)],
              'eval_top1': [(s, pytest.approx(owner(s) + s / 1000)) for s in range(4, 21, 4)]}
  assert tensorboard(local_copy(root, tmp_path), loader) == expected
  rows = metrics.read_rows(wd.join(root, wd.METRICS))
  assert sorted((r['step'], sorted(r)) for r in rows) == sorted(
      (s, sorted(['step', tag])) for tag, points in expected.items() for s, _ in points)
  names = [os.path.basename(p) for p in wd.glob(root, wd.EVENTS)]
  assert len(names) == (1 if where == 'local' else len(starts))


def test_an_evaluation_replaced_at_the_last_step_shows_once(tmp_path):
  """A finished run evaluated again (`write` of a changed row): the new values, once each."""
  root = str(tmp_path)
  run(root, 0, 8, 0, crash=False)
  writer = MetricWriter(root)
  writer.truncate_after(8)
  writer.write(8, {'eval_top1': 0.5})
  writer.close()
  for loader in ('plugin', 'legacy'):
    scalars = tensorboard(root, loader)
    assert scalars['eval_top1'] == [(4, pytest.approx(0.004)), (8, 0.5)]
    assert scalars['loss'] == [(s, pytest.approx(s / 100)) for s in (2, 4, 6, 8)]


def test_read_metrics_names_a_workdir_without_rows(tmp_path):
  """plot's and report's reader: the rows, or an error saying what the workdir lacks."""
  with pytest.raises(errors.MissingError, match=f'{tmp_path} has no metrics.jsonl: pass training '
                     'workdirs'):
    metrics.read_metrics(str(tmp_path))
  (tmp_path / wd.METRICS).write_text('\n')
  with pytest.raises(errors.MissingError, match='is empty: the run has not logged yet'):
    metrics.read_metrics(str(tmp_path))
  (tmp_path / wd.METRICS).write_text('{"step": 2, "loss": 1.5}\n')
  assert metrics.read_metrics(str(tmp_path)) == [{'step': 2, 'loss': 1.5}]
