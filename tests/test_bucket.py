"""Every path the programs take, on a bucket: gs:// on a GCS API server on 127.0.0.1
(`tests/gcs.py`), which every storage layer (gcsfs, TensorStore, ArrayRecord) talks to. And the
paths that cannot work, refused before any compute with one line naming them."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from inception_jax import checkpoint as ckpt, cli, convert, plot, predict, tf_import, workdir

from test_prepare import cifar10_manual_dir, open_source, prepare_cifar10  # noqa: F401
import train_utils as tu

STEPS = 8  # the tiny config's


def assert_nothing_local(*roots):
  """No `gs:` directory made by a gs:// path taken for a local one (`<cwd>/gs:/bucket/...`)."""
  for root in {tu.ROOT, os.getcwd(), *map(str, roots)}:
    for directory, names, _ in os.walk(root):
      assert 'gs:' not in names, directory
      names[:] = [n for n in names if n not in ('.git', 'node_modules')]


def program(module, *flags, env=None, timeout=300):
  return subprocess.run([sys.executable, '-m', module, *flags], cwd=tu.ROOT,
                        env=env or tu.environment(), capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope='module')
def trained(gcs_emulator, tmp_path_factory):
  """A workdir on a bucket: the tiny config trained for its 8 steps."""
  run = gcs_emulator.bucket() + '/runs/tiny'
  result = tu.run(run, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert_nothing_local(tmp_path_factory.getbasetemp())
  return run


def test_training_writes_to_the_bucket_and_resumes_from_it(trained, gcs_emulator, tmp_path):
  names = gcs_emulator.objects(trained)
  prefix = trained.split('/', 3)[3]
  for name in (workdir.METRICS, workdir.MODEL_INFO,
               f'{workdir.CHECKPOINTS}/{STEPS}/{workdir.COMMIT_MARKER}'):
    assert f'{prefix}/{name}' in names, names
  assert any(n.startswith(f'{prefix}/events.out.tfevents.') for n in names)
  assert workdir.latest_step(trained) == STEPS
  result = tu.run(trained, check=False, num_train_steps=STEPS + 2)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Resuming from {workdir.step_dir(trained, STEPS)}.' in result.stdout
  rows = workdir.read_text(workdir.join(trained, workdir.METRICS)).splitlines()
  assert json.loads(rows[-1])['step'] == STEPS + 2 and workdir.latest_step(trained) == STEPS + 2
  assert_nothing_local(tmp_path)


def test_init_from_a_bucket_into_a_bucket(trained, bucket, tmp_path):
  result = tu.run(bucket + '/fine', check=False, num_train_steps=2,
                  init_from=trained)
  assert result.returncode == 0, result.stderr[-3000:]
  assert workdir.latest_step(bucket + '/fine') == 2
  record = ckpt.ModelRecord.read(bucket + '/fine')
  assert record.model == ckpt.ModelRecord.read(workdir.step_dir(trained, STEPS)).model
  assert f'Starting from {trained} (' in result.stdout
  assert_nothing_local(tmp_path)


def test_evaluate_reads_and_writes_the_bucket(trained, bucket, tmp_path):
  output = bucket + '/results/evaluation.json'
  result = program('inception_jax.evaluate', f'--checkpoint={trained}', '--crops=1', '--json',
                   f'--output={output}')
  assert result.returncode == 0, result.stderr[-3000:]
  printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert json.loads(workdir.read_text(output)) == printed and printed[0]['crops'] == 1
  assert_nothing_local(tmp_path)


def test_plot_reads_workdirs_and_writes_the_figure_on_the_bucket(trained, bucket, tmp_path):
  output = bucket + '/figures/curves.png'
  cli.call(plot, [trained, f'--output={output}'])
  assert workdir.read_bytes(output)[:8] == b'\x89PNG\r\n\x1a\n'
  assert_nothing_local(tmp_path)


def test_predict_with_a_checkpoint_on_the_bucket(trained, tmp_path, capsys):
  from inception_jax.data import digits
  tf = tf_import.tensorflow()
  images, labels = digits.load(16)
  image = tmp_path / f'digit{labels[0]}.png'
  image.write_bytes(tf.io.encode_png(images[0]).numpy())
  assert cli.call(predict, ['--checkpoint', trained, '--top=2', image]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[0] == str(image) and '1. ' in out
  assert_nothing_local(tmp_path)


def test_convert_writes_its_output_to_the_bucket(trained, bucket, tmp_path, monkeypatch, capsys):
  """The conversion itself is test_convert's: here the tiny run's variables stand in for it."""
  variables = ckpt.load_variables(trained)
  record = ckpt.ModelRecord.read(trained)
  monkeypatch.setattr(convert, 'convert', lambda *args: (variables, record))
  weights = tmp_path / 'weights.keras'
  weights.write_bytes(b'stand-in')
  output = bucket + '/converted/tiny'
  cli.call(convert, ['--source=keras', f'--model={record.model}', f'--input={weights}',
                     f'--output={output}'])
  assert f'to {output}' in capsys.readouterr().out
  tu.assert_trees_equal(tu.final_variables(output), tu.final_variables(trained))
  assert ckpt.ModelRecord.read(output) == record
  assert_nothing_local(tmp_path)


def test_prepare_into_a_bucket_and_read_from_it(cifar10_manual_dir, bucket, tmp_path,  # noqa: F811
                                                capsys):
  manual_dir, expected = cifar10_manual_dir
  data_dir = bucket + '/tfds'
  stdout = prepare_cifar10(capsys, manual_dir, data_dir)
  assert stdout.strip().endswith(f'--config.dataset.data_dir={data_dir}')
  source = open_source('cifar10', data_dir)  # ArrayRecord's reader on gs://
  assert (source.train_size, source.eval_size) == (20, 6)
  encoded, labels, _ = source.read_eval(np.arange(6))
  firsts = [int(tf_import.tensorflow().io.decode_image(e).numpy()[0, 0, 0]) for e in encoded]
  assert dict(zip(firsts, labels)) == {k: expected[k] for k in range(20, 26)}
  assert_nothing_local(tmp_path)


@pytest.mark.parametrize('flag,path,message', [
    ('--workdir', 'gs://never-created-{uid}/run', 'the bucket gs://never-created-{uid} does not '
     'exist'),
    ('--workdir', 'ftp://host/run', 'ftp:// is no storage this project reaches'),
    ('--config.init_from', 'gs://never-created-{uid}/weights', 'the bucket '
     'gs://never-created-{uid} does not exist'),
    ('--config.dataset.data_dir', 'gs://never-created-{uid}/tfds', 'the bucket '
     'gs://never-created-{uid} does not exist'),
])
def test_a_path_that_cannot_work_is_one_line_before_any_compute(gcs_emulator, tmp_path, flag,
                                                                path, message):
  from inception_jax import errors, train
  uid = os.urandom(4).hex()
  path, message = path.format(uid=uid), message.format(uid=uid)
  on_workdir = flag == '--workdir'
  config = tu.tiny_config(**({} if on_workdir else {flag[len('--config.'):]: path}))
  started = time.monotonic()
  with pytest.raises(errors.UserError) as raised:
    train.Trainer(config, path if on_workdir else str(tmp_path / 'run'))
  assert str(raised.value).startswith(f'{flag}={path}: {message}'), raised.value
  assert time.monotonic() - started < 10
  assert_nothing_local(tmp_path)


def test_no_credentials_is_named_with_the_fix_within_seconds(tmp_path):
  """Without credentials the job stops at its start-up checks with exit status 2, naming the fix;
  the check itself answers in seconds (timed on its own, in a process of its own: the job's
  start-up, TensorFlow's import above all, took 15 to 45 s on this machine under load)."""
  env = {k: v for k, v in tu.environment().items()
         if k not in workdir.EMULATOR_VARIABLES}
  env.update(HOME=str(tmp_path), GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / 'nowhere.json'),
             CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'))
  result = subprocess.run(tu.command('gs://some-bucket/run'), cwd=tu.ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  first = result.stderr.splitlines()[0]
  assert first.startswith('error: --workdir=gs://some-bucket/run: no Google Cloud credentials')
  assert 'gcloud auth application-default login' in first
  assert 'GOOGLE_APPLICATION_CREDENTIALS' in first, first
  check = ('import time\n'
           'from inception_jax import errors, workdir\n'
           'started = time.monotonic()\n'
           'try:\n'
           '  workdir.check("gs://some-bucket/run", "--workdir")\n'
           'except errors.ConfigError:\n'
           '  print(time.monotonic() - started)\n')
  timed = subprocess.run([sys.executable, '-c', check], cwd=tu.ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
  assert timed.returncode == 0 and float(timed.stdout) < 10, (timed.stdout, timed.stderr[-2000:])


def test_storage_lost_mid_run_ends_with_the_fault_and_the_bucket_resumes(tmp_path):
  """The server stops mid-run: within gcsfs's retries (about 30 s; twice that when a save was
  finishing as the next began, each failing after its own retries) the job ends with exit 75 and
  the step to resume from; once the server is back, the same workdir resumes from it."""
  from gcs import Emulator
  emulator = Emulator(this_process=False)  # a server of its own, to stop
  try:
    run = emulator.bucket() + '/run'
    env = {**tu.environment(), **emulator.env}
    flags = dict(log_every_steps=1, checkpoint_every_steps=2, eval_every_steps=1000)
    job = subprocess.Popen(tu.command(run, num_train_steps=1000, **flags), cwd=tu.ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    # A step's own marker, written last: an item's (checkpoints/N/state/commit_success.txt) comes
    # before it, and the server stopped in between leaves no finished checkpoint.
    step_marker = re.compile(rf'/{workdir.CHECKPOINTS}/\d+/{re.escape(workdir.COMMIT_MARKER)}$')
    while not any(step_marker.search(n) for n in emulator.objects(run)):
      assert job.poll() is None and time.monotonic() < deadline, job.communicate()
      time.sleep(0.2)
    emulator.kill()
    stopped = time.monotonic()
    out, err = job.communicate(timeout=180)
    took = time.monotonic() - stopped
    assert job.returncode == 75, err[-3000:]
    # Against the emulator TensorStore logs once that it found no credentials (C++, not quieted).
    lines = [line for line in err.splitlines() if 'google_auth_provider' not in line]
    first = lines[0]
    assert first.startswith(f'error: the storage holding {run} stopped answering ('), err
    assert len(lines) <= 3 and 'Traceback' not in err, err
    print(f'The job ended {took:.1f} s after the server stopped: {first}')
    # Saves that finished just before the server stopped may not have been seen finished by the
    # job: then it names the steps in flight ('the newest of steps 2, 4 whose save finished').
    assert 'Nothing saved before is lost' in first and took < 100, (took, first)
    if 'whose save finished' in first:
      listed = first.split('the newest of steps ')[1].split(' whose')[0]
      steps = [int(s) for s in listed.split(', ')]
    elif 'if that save finished' in first:  # the only save: the one whose marker the test saw
      steps = [int(first.split('it resumes from step ')[1].split()[0])]
    else:
      steps = [int(first.split('it resumes from step ')[1].split()[0])]
      assert 'or a later one' in first, first
    emulator.restart()
    result = subprocess.run(tu.command(run, num_train_steps=max(steps) + 2, **flags), cwd=tu.ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Resuming from {run}/checkpoints/' in result.stdout, (result.stdout, result.stderr)
    resumed = int(result.stdout.split(f'Resuming from {run}/checkpoints/')[1].split('.')[0])
    # The marker the test waited for was committed: some save did finish.
    assert (resumed in steps if 'finished' in first else resumed >= steps[0] >= 2), (resumed, first)
  finally:
    emulator.stop()
  assert_nothing_local(tmp_path)
