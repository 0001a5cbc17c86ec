"""The launch scripts: the residual-scaling study (run here), and the Cloud TPU flow (its gcloud
commands, printed by --dry_run or run against a stand-in gcloud)."""

import json
import os
import shlex
import subprocess
import time

import pytest

import fake_gcloud as fake_gcloud_py
from train_utils import ROOT, environment, needs_libtpu

TINY = ['--config.model.depth_multiplier=0.125', '--config.num_train_steps=2',
        '--config.log_every_steps=1', '--config.eval_every_steps=2',
        '--config.checkpoint_every_steps=2']


def test_residual_scaling_study_trains_each_scale_and_seed_then_draws_them(tmp_path):
  # From another directory, with a relative output directory; one scale fails (not a number):
  # the others still train and are drawn, and the script ends in failure naming it.
  env = dict(environment(), SCALES='0.1 nan learned', SEEDS='3')
  result = subprocess.run([os.path.join(ROOT, 'launch/residual_scaling.sh'), 'study', *TINY],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'the scale must be a finite number' in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      'Failed: scale nan seed 3 (see their output above; rerun to resume).')
  tmp_path = tmp_path / 'study'
  assert sorted(os.listdir(tmp_path)) == ['residual_scaling.png', 'scale_0.1_seed_3',
                                          'scale_learned_seed_3']
  for name, learned in (('scale_0.1_seed_3', False), ('scale_learned_seed_3', True)):
    with open(tmp_path / name / 'model.json') as f:
      options = json.load(f)['options']
    assert options.get('learn_residual_scale', False) is learned
    with open(tmp_path / name / 'metrics.jsonl') as f:
      rows = [json.loads(line) for line in f]
    assert [r['step'] for r in rows if 'dead_fraction' in r] == [1, 2]
  assert (tmp_path / 'residual_scaling.png').read_bytes().startswith(b'\x89PNG')


def test_residual_scaling_study_without_an_output_directory_prints_its_usage():
  result = subprocess.run(['launch/residual_scaling.sh'], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2 and 'launch/residual_scaling.sh OUTDIR' in result.stdout


# launch/tpu_pod.sh: the Cloud TPU flow, checked through --dry_run and against a stand-in gcloud.
TPU_POD = os.path.join(ROOT, 'launch/tpu_pod.sh')
JOB = ['configs/irv2.py', 'gs://bucket/irv2', '--config.dataset.data_dir=gs://bucket/tfds',
       '--config.model.dtype=bfloat16']


def tpu_pod(*args, env=None, cwd=ROOT, timeout=120):
  return subprocess.run([TPU_POD, *args], cwd=cwd, env=dict(os.environ, POLL_SECONDS='0',
                                                            **(env or {})),
                        capture_output=True, text=True, timeout=timeout)


def gcloud_lines(stdout):
  return [shlex.split(line)[1:] for line in stdout.splitlines() if line.startswith('gcloud ')]


def flag(args, name):
  values = [a.split('=', 1)[1] for a in args if a.startswith(f'--{name}=')]
  assert len(values) == 1, (name, args)
  return values[0]


@pytest.mark.parametrize('accelerator,cloud_type,runtime', [
    ('v5e-16', 'v5litepod-16', 'v2-alpha-tpuv5-lite'), ('v5p-128', 'v5p-128', 'v2-alpha-tpuv5'),
    ('v6e-64', 'v6e-64', 'v2-alpha-tpuv6e'), ('v4-32', 'v4-32', 'tpu-ubuntu2204-base')])
def test_tpu_pod_dry_run_prints_the_whole_flow(accelerator, cloud_type, runtime):
  done = tpu_pod('--dry_run', '--spot', 'run1', 'us-east5-a', accelerator, *JOB,
                 env={'PROJECT': 'my-project'})
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  # First the compile check, for this slice, with the job's overrides.
  assert shlex.split(lines[0]) == ['python', '-m', 'inception_jax.aot', '--config=configs/irv2.py',
                                   f'--topology={accelerator}', *JOB[2:]]
  calls = gcloud_lines(done.stdout)
  assert all(c[:2] == ['compute', 'tpus'] and flag(c, 'zone') == 'us-east5-a' and
             flag(c, 'project') == 'my-project' for c in calls)
  kinds = [' '.join(c[2:4]) for c in calls]
  create = calls[kinds.index('queued-resources create')]
  assert create[4] == 'run1' and flag(create, 'node-id') == 'run1' and '--spot' in create
  assert flag(create, 'accelerator-type') == cloud_type
  assert flag(create, 'runtime-version') == runtime
  # It waits for the slice, then copies the code to every worker and installs the [tpu] extra.
  assert kinds.index('queued-resources describe') < kinds.index('queued-resources create') < \
      len(kinds) - 1 - kinds[::-1].index('queued-resources describe') < kinds.index('tpu-vm scp')
  scp = calls[kinds.index('tpu-vm scp')]
  assert flag(scp, 'worker') == 'all' and scp[5] == 'run1:inception_jax.tgz'
  ssh = [c for c in calls if c[2:4] == ['tpu-vm', 'ssh']]
  # Is a job running already (worker 0)? Install, start (all), stream, how it ended (worker 0).
  assert [flag(c, 'worker') for c in ssh] == ['0', 'all', 'all', '0', '0']
  assert "pip install -q -e '.[tpu]'" in flag(ssh[1], 'command')
  # The job on every worker, detached, with the config, the gs:// workdir and the overrides.
  start = shlex.split(flag(ssh[2], 'command'))
  job = shlex.split(start[start.index('-c') + 1].split(';')[0])
  assert job == ['python3', '-m', 'inception_jax.main', '--config=configs/irv2.py',
                 '--workdir=gs://bucket/irv2', *JOB[2:]]
  assert 'nohup' in start
  assert flag(ssh[3], 'command').startswith('tail')  # worker 0's log, streamed
  assert 'queued-resources delete' not in kinds


def test_tpu_pod_refuses_a_local_workdir_and_unknown_slices():
  done = tpu_pod('--dry_run', 'run1', 'zone', 'v5e-16', 'configs/irv2.py', '/tmp/irv2')
  assert done.returncode == 2 and 'the workdir must be on GCS' in done.stderr
  done = tpu_pod('--dry_run', 'run1', 'zone', 'v9-16', 'configs/irv2.py', 'gs://b/w')
  assert done.returncode == 2 and 'unknown accelerator v9-16' in done.stderr
  done = tpu_pod()
  assert done.returncode == 2 and 'launch/tpu_pod.sh' in done.stdout


def fake_gcloud(tmp_path, scenario, **state):
  """The scripted stand-in gcloud (tests/fake_gcloud.py) and the node's initial `state`."""
  bin_dir = fake_gcloud_py.install(str(tmp_path / 'bin'))
  if state:
    (tmp_path / 'state.json').write_text(json.dumps(
        {'node': None, 'type': None, 'job': None, 'streams': 0, **state}))
  env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'FAKE_STATE': str(tmp_path / 'state.json'),
         'FAKE_LOG': str(tmp_path / 'calls.jsonl'), 'SCENARIO': scenario}

  def calls():
    with open(tmp_path / 'calls.jsonl') as f:
      return [' '.join(json.loads(line)[2:4]) + (' start' if 'nohup' in line else '')
              for line in f]
  return env, calls


@pytest.mark.parametrize('scenario', ['preempt,0', 'saved,0', 'drop,0', '75,0'])
def test_tpu_pod_recreates_a_preempted_slice_and_reruns_the_job(tmp_path, scenario):
  env, calls = fake_gcloud(tmp_path, scenario)
  done = tpu_pod('--skip_check', '--spot', '--delete', 'run1', 'zone', 'v5e-16', *JOB, env=env)
  assert done.returncode == 0, done.stderr
  assert 'the job finished' in done.stderr and done.stdout.count('step 1/10') == 2
  made = calls()
  if scenario == 'drop,0':  # the log is streamed again; the job was started once
    assert made.count('tpu-vm ssh start') == 1 and 'creating it again' not in done.stderr
  else:  # preempted, or stopped on a fault that a rerun resumes from (75: a lost host)
    assert 'the job resumes from its last checkpoint in gs://bucket/irv2' in done.stderr
    assert ('the job stopped on a fault' in done.stderr) == (scenario == '75,0')
    assert made.count('queued-resources create') == (2 if scenario == 'preempt,0' else 1)
    assert made.count('tpu-vm scp') == 2  # the code is copied again and the job started again
    assert made.count('tpu-vm ssh start') == 2
  assert made[-1] == 'queued-resources delete'  # --delete, once the job has finished


def test_tpu_pod_follows_a_job_that_is_running_already(tmp_path):
  # Rerun while the job runs (e.g. after this machine lost its connection): streamed, not
  # installed or started again. A gcloud error that is not NOT_FOUND deletes nothing.
  env, calls = fake_gcloud(tmp_path, '0', node='READY', type='v5litepod-16', job='running',
                           flaky=True)
  done = tpu_pod('--skip_check', 'run1', 'zone', 'v5e-16', *JOB, env=env)
  assert done.returncode == 0, done.stderr
  assert 'auth tokens' in done.stderr and 'the job is running on run1 already' in done.stderr
  made = calls()
  assert not {'tpu-vm scp', 'tpu-vm ssh start', 'queued-resources delete',
              'queued-resources create'} & set(made)


def test_tpu_pod_refuses_a_slice_of_another_type(tmp_path):
  env, calls = fake_gcloud(tmp_path, '0', node='READY', type='v5litepod-64')
  done = tpu_pod('--skip_check', 'run1', 'zone', 'v5e-16', *JOB, env=env)
  assert done.returncode == 2
  assert 'run1 exists as a v5litepod-64 slice, not v5litepod-16' in done.stderr
  assert calls() == ['tpu-vm describe']


def test_tpu_pod_stops_on_a_failed_job_and_keeps_the_slice(tmp_path):
  env, calls = fake_gcloud(tmp_path, '1')
  done = tpu_pod('--skip_check', 'run1', 'zone', 'v5e-16', *JOB, env=env)
  assert done.returncode == 1
  assert 'the job failed with status 1' in done.stderr and 'rerun this command' in done.stderr
  assert calls().count('queued-resources create') == 1
  assert 'queued-resources delete' not in calls()


def test_tpu_pod_starts_the_job_detached(tmp_path):
  # The start command returns at once (ssh would otherwise wait for the whole job), and the log
  # ends with the job's exit status.
  done = tpu_pod('--dry_run', '--skip_check', 'run1', 'zone', 'v5e-16', *JOB)
  start = flag(gcloud_lines(done.stdout)[-3], 'command')
  assert 'nohup' in start
  home, bin_dir = tmp_path / 'home', tmp_path / 'bin'
  (home / 'inception_jax').mkdir(parents=True)
  bin_dir.mkdir()
  (bin_dir / 'python3').write_text('#!/bin/sh\nsleep 3\necho "step 1"\nexit 3\n')
  (bin_dir / 'python3').chmod(0o755)
  env = dict(os.environ, HOME=str(home), PATH=f'{bin_dir}:{os.environ["PATH"]}')
  began = time.monotonic()
  subprocess.run(['bash', '-c', start], env=env, stdout=subprocess.PIPE, check=True, timeout=30)
  assert time.monotonic() - began < 2
  log = home / 'inception_jax.log'
  deadline = time.monotonic() + 30
  while 'exit status' not in log.read_text() and time.monotonic() < deadline:
    time.sleep(0.2)
  assert log.read_text().splitlines() == ['step 1', 'exit status 3']


@needs_libtpu
def test_tpu_pod_stops_before_creating_a_slice_the_job_does_not_fit(tmp_path, optimized):
  env, _ = fake_gcloud(tmp_path, '0')
  env.update(environment(), PATH=env['PATH'])
  done = tpu_pod('run1', 'zone', 'v5e-4', 'configs/demo.py:tiny', 'gs://bucket/tiny',
                 '--config.dataset.name=synthetic', '--config.dataset.image_size=299',
                 '--config.model.dtype=bfloat16', '--config.batch_size=65536', env=env,
                 timeout=600)
  assert done.returncode == 1, done.stderr
  assert 'does not fit by' in done.stdout
  assert 'the job does not fit or compile on v5e-4' in done.stderr
  assert not os.path.exists(tmp_path / 'calls.jsonl')  # no gcloud command ran
