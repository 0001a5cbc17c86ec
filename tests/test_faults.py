"""Faults a long run meets, injected: a full disk (at start, during a checkpoint, during a log
write), an unwritable workdir, a lost process or coordinator, SIGKILL during asynchronous saves,
a checkpoint whose bytes changed, and bad config values. Each must end in a few lines that say
what to do, with nothing saved lost, and a rerun must resume. README.md, "Reliability", lists
them."""

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time

import chaos
import jax
import numpy as np
import pytest
import tensorstore

from inception_jax import checkpoint as ckpt, config_checks, faults, train
from inception_jax.errors import ConfigError, MissingError

import train_utils as tu


def error_lines(stderr):
  """The lines of `stderr` but JAX's own log of its compiles (JAX_LOG_COMPILES=1)."""
  return [line for line in stderr.splitlines()
          if line.strip() and not re.match(r'[WI]\d{4} .*(dispatch|pxla|compiler)\.py', line)]


def assert_reported(result, *phrases, status=faults.EXIT_STATUS):
  """The run ended with `status` and at most three lines on stderr, containing `phrases`."""
  lines = error_lines(result.stderr)
  assert result.returncode == status, result.stderr[-3000:]
  assert len(lines) <= 3, result.stderr[-3000:]
  for phrase in phrases:
    assert phrase in result.stderr, result.stderr


@contextlib.contextmanager
def small_disk(path, mib, read_only=False):
  """A tmpfs of `mib` MiB at `path` (root only: CI's machines run the suite as root)."""
  if os.geteuid() != 0:
    pytest.skip('mounting a small filesystem needs root')
  os.makedirs(path)
  options = f'size={mib}m' + (',ro' if read_only else '')
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                    capture_output=True).returncode:
    pytest.skip('this machine cannot mount a tmpfs')
  try:
    yield str(path)
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def fill(directory, leave_bytes=0):
  """Fills the filesystem of `directory` but `leave_bytes`; returns the filler's path."""
  filler = os.path.join(directory, 'filler')
  free = shutil.disk_usage(directory).free - leave_bytes
  with open(filler, 'wb') as f:
    try:
      while free > 0:
        chunk = min(free, 1 << 20)
        f.write(b'\0' * chunk)
        free -= chunk
      f.flush()
    except OSError:  # full a little early
      pass
  return filler


def checkpoint_bytes(workdir, step):
  """Bytes a checkpoint takes on a tmpfs (each file rounded up to 4 KiB pages)."""
  directory = os.path.join(workdir, 'checkpoints', str(step))
  return sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) * 4096
             for d, _, files in os.walk(directory) for f in files)


def no_compiles_env():
  return dict(tu.environment(), JAX_LOG_COMPILES='1')


def compiled_the_network(stderr):
  """Whether JAX compiled the network's initialisation or a step (JAX_LOG_COMPILES=1); the
  digits' resize is compiled while the data loads, and tracing shapes compiles nothing."""
  return bool(re.search(r'Compiling jit\((initial_state|init|train_step|eval_step)', stderr))


def test_full_disk_at_start_fails_before_compiling(tmp_path):
  with small_disk(tmp_path / 'disk', 1) as disk:
    result = subprocess.run(tu.command(f'{disk}/run'), cwd=tu.ROOT, env=no_compiles_env(),
                            capture_output=True, text=True, timeout=300)
  assert_reported(result, 'less than one checkpoint of this run', 'choose another --workdir')
  assert not compiled_the_network(result.stderr) and 'Training' not in result.stdout


def test_unwritable_workdir_fails_before_compiling(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = subprocess.run(tu.command(f'{blocker}/run'), cwd=tu.ROOT, env=no_compiles_env(),
                          capture_output=True, text=True, timeout=300)
  assert_reported(result, f'--workdir={blocker}/run cannot be written', status=2)
  assert not compiled_the_network(result.stderr)
  with small_disk(tmp_path / 'ro', 4, read_only=True) as disk:
    result = subprocess.run(tu.command(f'{disk}/run'), cwd=tu.ROOT, env=no_compiles_env(),
                            capture_output=True, text=True, timeout=300)
  assert_reported(result, 'cannot be written (Read-only file system)', status=2)


def test_full_disk_during_a_checkpoint_then_free_space_and_resume(straight, tmp_path):
  """Room for one and a half checkpoints: the save at step 4 lands, the one at step 8 fails."""
  with small_disk(tmp_path / 'disk', 64) as disk:
    filler = fill(disk, leave_bytes=int(1.5 * checkpoint_bytes(straight, tu.STEPS)) + (256 << 10))
    workdir = f'{disk}/run'
    result = tu.run(workdir, check=False, num_train_steps=tu.STEPS)
    assert_reported(result, f'the disk holding {workdir} is full',
                    f'it resumes from step 4 ({workdir}/checkpoints/4)')
    assert 'Traceback' not in result.stderr and 'Event loop is closed' not in result.stderr
    os.remove(filler)  # "free space there"
    tu.run(workdir, num_train_steps=tu.STEPS)
    assert tu.losses(workdir) == tu.losses(straight)
    tu.assert_trees_equal(tu.final_variables(workdir), tu.final_variables(straight))


def test_full_disk_while_writing_the_metrics_keeps_the_log_whole(tmp_path):
  with small_disk(tmp_path / 'disk', 64) as disk:
    workdir = f'{disk}/run'
    proc = subprocess.Popen(tu.command(workdir, num_train_steps=3000, log_every_steps=1,
                                    checkpoint_every_steps=5000, eval_every_steps=5000),
                            cwd=tu.ROOT, env=tu.environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
      if line.startswith('step 5/'):
        break
    fill(disk)
    out, err = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_reported(result, f'the disk holding {workdir} is full', 'writing ',
                    'no checkpoint was saved yet')
    rows = tu.metrics(workdir)  # whole: every line parses
    assert rows and rows[-1]['step'] < 3000
    assert not [f for f in os.listdir(workdir) if f.endswith('.tmp')]


def test_write_atomically_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
  from inception_jax import workdir
  path = str(tmp_path / 'log.jsonl')
  workdir.write_atomically(path, 'old\n')

  def failing_rename(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(type(workdir.path(path)), 'replace', failing_rename)
  with pytest.raises(OSError) as raised:
    workdir.write_atomically(path, 'new\n')
  assert faults.is_disk_full(raised.value)
  assert open(path).read() == 'old\n' and os.listdir(tmp_path) == ['log.jsonl']


@pytest.mark.parametrize('lost', [1, 0], ids=['peer', 'coordinator'])
def test_a_lost_process_stops_the_others_within_the_timeout(tmp_path, lost):
  workdir = str(tmp_path)
  procs = tu.start_processes(workdir)
  try:
    for line in procs[0].stdout:
      if line.startswith('step 20/'):
        break
    procs[lost].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor = procs[1 - lost]
    _, err = survivor.communicate(timeout=120)
    elapsed = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  result = subprocess.CompletedProcess(survivor.args, survivor.returncode, '', err)
  what = (f'process 1 of 2 (host {os.uname().nodename}) stopped responding' if lost == 1 else
          'the coordinator (process 0 at')
  assert_reported(result, what, 'rerun the same command on every host: it resumes from step')
  assert elapsed < 3 * 1.5 + 10, elapsed  # the timeout, its polling, and the exit


def test_chaos_many_kills_during_async_saves_end_bit_exact(straight, tmp_path):
  landed = chaos.chaos(str(tmp_path), straight, tu.STEPS, kills=3, seed=random.randrange(1 << 30),
                       max_delay=1.0)
  assert landed >= 1


def flip_a_byte(step_dir, seed):
  """Flips one bit of a byte the restore reads: inside one array chunk the checkpoint's B-tree
  points to. Not any byte of a data file: OCDBT files also hold bytes no restore reads (the
  per-process B-tree node Orbax merges away, ~2% of the biggest file), where a flip changes nothing.
  Returns the chunk's key."""
  state = os.path.join(step_dir, 'state')
  store = tensorstore.KvStore.open(f'file://{state}/').result()
  manifest = tensorstore.ocdbt.dump(store).result()
  nodes = [manifest['versions'][-1]['root']['location']]
  chunks = []
  while nodes:  # every B-tree node, from the root down
    dump = tensorstore.ocdbt.dump(store, nodes.pop()).result()
    for entry in dump['entries']:
      for value in entry.values():
        if isinstance(value, str) and value.startswith('btreenode:'):
          nodes.append(value)
      if 'indirect_value' in entry:
        chunks.append((entry['key'], entry['indirect_value']))
  rng = random.Random(seed)
  key, location = rng.choice(sorted(chunks))
  where = re.fullmatch(r'value:(.*):(d/[^:]+):(\d+):(\d+)', location)
  prefix, name, offset, length = where.groups()
  with open(os.path.join(state, prefix, name), 'r+b') as f:
    f.seek(int(offset) + rng.randrange(int(length)))
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))
  return key


def test_a_flipped_byte_is_caught_and_the_previous_checkpoint_used(straight, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  seed = random.randrange(1 << 30)
  flipped = flip_a_byte(os.path.join(workdir, 'checkpoints', str(tu.STEPS)), seed)
  train.train_and_evaluate(tu.tiny_config(num_train_steps=tu.STEPS), workdir)
  corrupt = os.path.join(workdir, 'checkpoints_corrupt')
  assert os.path.isdir(corrupt) and os.listdir(corrupt), f'seed {seed}: a byte of {flipped}'
  assert tu.losses(workdir) == tu.losses(straight)
  tu.assert_trees_equal(tu.final_variables(workdir), tu.final_variables(straight))


def test_digest_names_the_changed_array_and_ignores_the_order_of_addition():
  tree = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': {'c': np.int32(7)},
          'h': np.ones(5, jax.numpy.bfloat16)}
  recorded = ckpt.digest(tree)
  ckpt.verify(tree, recorded, 'here')
  for name, changed in (('a', {**tree, 'a': tree['a'][::-1].copy()}),  # same values, moved
                        ('b/c', {**tree, 'b': {'c': np.int32(6)}}),
                        ('h', {**tree, 'h': np.full(5, 1.0078125, jax.numpy.bfloat16)})):
    with pytest.raises(ckpt.CorruptCheckpoint, match=f'here: {name} differs'):
      ckpt.verify(changed, recorded, 'here')
  sharded = jax.device_put(np.arange(64, dtype=np.float32))
  assert ckpt.digest({'x': sharded}) == ckpt.digest({'x': np.arange(64, dtype=np.float32)})
  ckpt.verify(tree, None, 'an old checkpoint without digests')  # not checked


@pytest.mark.parametrize('overrides,message', [
    ({'learning_rate': -0.1}, 'config.learning_rate=-0.1 must be in (0, inf)'),
    ({'learning_rate': 0.0}, 'config.learning_rate=0.0 must be in (0, inf)'),
    ({'model.dropout_keep': 0.0}, 'config.model.dropout_keep=0.0 must be in (0, 1]'),
    ({'model.dropout_keep': 1.2}, 'config.model.dropout_keep=1.2 must be in (0, 1]'),
    ({'model.residual_scale': -0.1}, 'config.model.residual_scale=-0.1 must not be negative'),
    ({'model.small_inputs': False}, 'config.dataset.image_size=16 is below the 75 pixels'),
    ({'ema_decay': 1.0}, 'config.ema_decay=1.0 must be in [0, 1)'),
    ({'keep_checkpoints': 0}, 'config.keep_checkpoints=0 must be in [1, inf)'),
])
def test_bad_config_values_fail_naming_the_field(overrides, message):
  with pytest.raises(ConfigError) as raised:
    config_checks.validate(tu.tiny_config(**overrides))
  assert message in str(raised.value)


def test_a_missing_init_from_fails_before_compute(tmp_path):
  config = tu.tiny_config(init_from=str(tmp_path / 'nowhere'))
  with pytest.raises(MissingError, match='config.init_from=.*nowhere: no such directory'):
    train.Trainer(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('status,what', [
    ('UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was '
     'preempted/died', 'the coordinator (process 0 at 10.0.0.1:1234) is gone'),
    ('DEADLINE_EXCEEDED: Deadline Exceeded', 'the coordinator (process 0 at 10.0.0.1:1234) could '
     'not be reached in time'),
    ('INTERNAL: Shutdown barrier has failed.', 'another process of the job died'),
])
def test_the_parent_names_what_the_distributed_client_lost(tmp_path, status, what):
  from inception_jax import supervise
  fatal = ('F1204 21:42:29.475654   11844 client.h:80] Terminating process because the JAX '
           f'distributed service detected fatal errors. ... absl::Status: {status}\n')
  assert supervise.FATAL.match(fatal)
  message = supervise.lost_service_message(fatal, str(tmp_path), '10.0.0.1:1234')
  assert message.startswith(what + ': ')
  assert message.endswith('rerun the same command on every host: no checkpoint was saved yet, so '
                          'it starts again.')


def test_a_checkpoint_of_another_train_state_is_kept_not_set_aside(straight, tmp_path):
  """Resuming under a config that builds another optimizer state fails naming the checkpoint;
  only unreadable bytes set a checkpoint aside."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(ConfigError, match=r'checkpoints/12 does not restore into the train state .*'
                                        'The checkpoints are kept'):
    train.train_and_evaluate(tu.tiny_config(num_train_steps=tu.STEPS, rmsprop_momentum=0.0),
                             workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_corrupt'))
  assert tu.losses(workdir) == tu.losses(straight)  # the log is untouched


def test_an_error_on_one_host_of_several_exits_at_once(monkeypatch, capsys):
  """Joined to other processes, a config error ends the process with os._exit (a normal exit
  would wait in JAX's shutdown barrier for processes that wait for this one); alone, sys.exit."""
  from jax._src import distributed as jax_distributed

  from inception_jax import errors
  exits = []
  monkeypatch.setattr(os, '_exit', lambda status: exits.append(status) or (_ for _ in ()).throw(
      SystemExit(status)))
  for joined, expected in ((object(), [errors.EXIT_STATUS]), (None, [])):
    monkeypatch.setattr(jax_distributed.global_state, 'client', joined)
    with pytest.raises(SystemExit) as raised, errors.reported():
      raise ConfigError('config.learning_rate=-1 must be in (0, inf).')
    assert raised.value.code == errors.EXIT_STATUS and exits == expected
    assert 'error: config.learning_rate=-1' in capsys.readouterr().err
    exits.clear()
