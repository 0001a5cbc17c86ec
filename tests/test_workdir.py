"""inception_jax.workdir: the layout, paths, and storage on local disk and on an emulated bucket."""

import os

import pytest

from inception_jax import workdir

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"


def test_absolute_leaves_urls_alone_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir.absolute('gs://b/run/') == 'gs://b/run'
  assert workdir.absolute('s3://b/run') == 's3://b/run'
  assert workdir.absolute('run') == str(tmp_path / 'run')
  assert workdir.checkpoints('gs://b/run') == 'gs://b/run/checkpoints'
  assert workdir.step_dir('gs://b/run', 7) == 'gs://b/run/checkpoints/7'
  assert workdir.is_remote('gs://b') and not workdir.is_remote('/tmp/gs:/b')
  assert not os.path.exists(tmp_path / 'gs:')


@pytest.mark.parametrize('where', ['local', 'bucket'])
def test_storage_round_trip_and_finished_steps(where, tmp_path, request):
  root = str(tmp_path) if where == 'local' else request.getfixturevalue('bucket') + '/run'
  workdir.write_atomically(workdir.join(root, workdir.METRICS), '{"step": 1}\n')
  workdir.write_atomically(workdir.join(root, workdir.METRICS), '{"step": 2}\n')
  assert workdir.read_text(workdir.join(root, workdir.METRICS)) == '{"step": 2}\n'
  assert workdir.glob(root, '*.tmp') == []
  checkpoints = workdir.checkpoints(root)
  for name in ('4', '12', '8.orbax-checkpoint-tmp-3'):
    workdir.makedirs(workdir.join(checkpoints, name))
    workdir.write_atomically(workdir.join(checkpoints, name, workdir.COMMIT_MARKER), 'done')
  workdir.makedirs(workdir.join(checkpoints, '16'))  # unfinished on an object store
  workdir.write_atomically(workdir.join(checkpoints, '16', 'x'), 'partial')
  expected = [4, 12] if where == 'bucket' else [4, 12, 16]
  assert workdir.finished_steps(checkpoints) == expected
  assert workdir.latest_step(root) == expected[-1]
  workdir.move(workdir.join(checkpoints, '12'), workdir.join(workdir.corrupt(root), '12-1'))
  assert workdir.exists(workdir.join(workdir.corrupt(root), '12-1', workdir.COMMIT_MARKER))
  assert 12 not in workdir.finished_steps(checkpoints)
  assert workdir.finished_steps(workdir.join(root, 'nothing')) == []
