"""The training job: learning, exact resume, sharding, multi-process, preemption and faults."""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from configs import demo
from inception_jax import optim, train, workdir as workdir_lib
from inception_jax.models import diagnostics

from train_utils import (
  ROOT,
  STEPS,
  assert_trees_equal,
  command,
  environment,
  final_variables,
  free_port,
  losses,
  metrics,
  run,
  tiny_config,
)


def checkpoint_variables(workdir, step):
  return final_variables(os.path.join(workdir, 'checkpoints', str(step)))


@pytest.mark.slow
def test_demo_learns_as_the_readme_says(tmp_path, optimized):
  """The README's first command: the demo config, run as it ships."""
  config = demo.get_config()
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['eval_top1'] >= 0.97, result
  assert result['eval_raw_top1'] >= 0.97, result
  assert result['eval_examples'] == 297  # every eval example counted once, none padded in
  logged = losses(str(tmp_path))
  steps = int(config.num_epochs) * (1500 // config.batch_size)  # 1,500 training digits
  assert [s for s, _ in logged] == [*range(config.log_every_steps, steps, config.log_every_steps),
                                    steps]
  assert logged[-1][1] < 0.8 * logged[0][1], logged


@pytest.mark.quick
def test_restart_gives_bitwise_identical_run(straight, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(num_train_steps=6), workdir)
  train.train_and_evaluate(tiny_config(num_train_steps=STEPS), workdir)
  assert losses(workdir) == losses(straight)
  assert_trees_equal(final_variables(workdir), final_variables(straight))


def test_sigkill_at_a_random_moment_of_the_start_then_resume(straight, tmp_path):
  """Killed while starting or compiling (tests/chaos.py, in test_faults.py, kills it many times
  while it trains and saves)."""
  workdir = str(tmp_path)
  seed = random.randrange(1 << 30)
  delay = random.Random(seed).uniform(0.0, 20.0)
  proc = subprocess.Popen(command(workdir, num_train_steps=STEPS), cwd=ROOT, env=environment(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  time.sleep(delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  run(workdir, num_train_steps=STEPS)
  assert losses(workdir) == losses(straight), f'kill delay {delay:.2f}s (seed {seed})'
  assert_trees_equal(final_variables(workdir), final_variables(straight))


def test_eight_devices_match_one(tmp_path, optimized):
  eight, one = str(tmp_path / 'eight'), str(tmp_path / 'one')
  overrides = dict(num_train_steps=2, checkpoint_every_steps=1, log_every_steps=1)
  result = run(eight, devices=8, **overrides)
  assert 'on 8 device(s)' in result.stdout
  train.train_and_evaluate(tiny_config(**overrides), one)
  # Same function: the first step agrees to float32 rounding (the 8-way sums add in another
  # order); per-device BatchNorm statistics would differ by far more.
  np.testing.assert_allclose([l for _, l in losses(eight)], [l for _, l in losses(one)], rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         checkpoint_variables(eight, 1), checkpoint_variables(one, 1))


def run_two_processes(workdir, steps):
  port = free_port()
  procs = [subprocess.Popen(
      command(workdir, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
              f'--process_id={i}', num_train_steps=steps),
      cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_processes_train_checkpoint_and_resume(straight, tmp_path):
  resumed, uninterrupted = str(tmp_path / 'resumed'), str(tmp_path / 'uninterrupted')
  first = run_two_processes(resumed, 4)
  assert 'on 2 device(s), 2 process(es)' in first[0]
  assert 'Training' not in first[1], 'only process 0 prints'
  second = run_two_processes(resumed, 8)
  assert 'Resuming from' in second[0]
  run_two_processes(uninterrupted, 8)
  assert losses(resumed) == losses(uninterrupted)
  assert_trees_equal(final_variables(resumed), final_variables(uninterrupted))
  # The same function as one process on one device, up to the order of the cross-device sums,
  # which ~30 BatchNorm layers amplify: the first logged loss moved by 4.7e-6 (jax 0.10.2) and
  # 3.8e-5 (jax 0.8.1, the floor) between one and two devices of one process.
  np.testing.assert_allclose(losses(resumed)[0][1], losses(straight)[0][1], rtol=1e-4)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(command(workdir, num_train_steps=500, checkpoint_every_steps=1000,
                                  eval_every_steps=1000), cwd=ROOT, env=environment(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.startswith('step '):
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert 'Preempted: saved' in out
  steps = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()]
  assert len(steps) == 1 and 2 <= steps[0] < 500


def test_injected_nan_stops_with_the_step_and_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  config = tiny_config(learning_rate=1e30, num_train_steps=8, checkpoint_every_steps=1,
                       log_every_steps=4)
  with pytest.raises(FloatingPointError, match=r'Non-finite loss or gradients at step (\d+).*'
                     r'last good checkpoint is .*checkpoints/\d+'):
    train.train_and_evaluate(config, workdir)
  saved = final_variables(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(saved))


def test_truncated_latest_checkpoint_falls_back_to_the_previous(straight, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  latest = os.path.join(workdir, 'checkpoints', str(STEPS), 'state')
  files = [os.path.join(d, f) for d, _, fs in os.walk(latest) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)
  train.train_and_evaluate(tiny_config(num_train_steps=STEPS), workdir)
  assert os.listdir(os.path.join(workdir, 'checkpoints_corrupt'))
  assert losses(workdir) == losses(straight)
  assert_trees_equal(final_variables(workdir), final_variables(straight))


@pytest.mark.quick
def test_bad_configs_fail_before_compute_naming_the_field(tmp_path):
  result = run(str(tmp_path / 'a'), devices=8, check=False, batch_size=12)
  assert result.returncode != 0
  assert 'config.batch_size=12 must be a positive multiple of the 8 devices' in result.stderr
  result = run(str(tmp_path / 'b'), check=False, batch_sise=16)
  assert result.returncode != 0 and 'batch_sise' in result.stderr
  with pytest.raises(ValueError, match="Unknown dataset 'mnist'.*digits"):
    train.train_and_evaluate(tiny_config(**{'dataset.name': 'mnist'}), str(tmp_path / 'c'))
  with pytest.raises(ValueError, match="Unknown model 'inception_v5'"):
    train.train_and_evaluate(tiny_config(**{'model.name': 'inception_v5'}), str(tmp_path / 'd'))
  with pytest.raises(ValueError, match='residual_scale applies to Inception-ResNet models only'):
    train.train_and_evaluate(tiny_config(**{'model.name': 'inception_v4',
                                            'model.residual_scale': 0.1}), str(tmp_path / 'e'))


def test_metrics_log_every_event(straight):
  events = metrics(straight)
  train_events = [e for e in events if 'loss' in e]
  eval_events = [e for e in events if 'eval_top1' in e]
  assert [e['step'] for e in train_events] == [2, 4, 6, 8, 10, 12]
  assert {'loss', 'top1', 'learning_rate', 'images_per_sec'} <= set(train_events[0])
  assert [e['step'] for e in eval_events] == [8, 12]
  assert {'eval_top1', 'eval_top5', 'eval_loss', 'eval_raw_top1'} <= set(eval_events[0])
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(straight))


def test_bfloat16_training_keeps_float32_state(tmp_path):
  config = tiny_config(num_train_steps=2, log_every_steps=1, **{'model.dtype': 'bfloat16'})
  train.train_and_evaluate(config, str(tmp_path))
  assert all(np.isfinite(loss) for _, loss in losses(str(tmp_path)))
  variables = final_variables(str(tmp_path))
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {np.dtype('float32')}


def tensorboard_scalars(workdir):
  """{tag: [steps]} as TensorBoard reads the workdir (it drops steps that a restart rewrote)."""
  from test_metrics import tensorboard
  return {tag: [step for step, _ in points]
          for tag, points in tensorboard(workdir, 'plugin').items()}


def test_resumed_and_rerun_workdirs_log_each_step_once(tmp_path):
  workdir = str(tmp_path)
  config = tiny_config(num_train_steps=6, warmup_epochs=0.05, checkpoint_every_steps=4,
                       eval_every_steps=4)
  train.train_and_evaluate(config, workdir)
  first = metrics(workdir)
  # The learning rate logged at step s is the schedule's at update s (not the window's mean).
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=1500 // config.batch_size)
  logged = [(row['step'], row['learning_rate']) for row in first if 'learning_rate' in row]
  assert [s for s, _ in logged] == [2, 4, 6]
  np.testing.assert_allclose([lr for _, lr in logged], [schedule(s - 1) for s, _ in logged],
                             rtol=1e-6)
  assert len({lr for _, lr in logged}) == 3  # inside the warm-up: the rate changes every step

  train.train_and_evaluate(config, workdir)  # finished: evaluates again, adds no row
  assert metrics(workdir) == first
  # Died after its checkpoint at step 4, mid-way through writing an event: resumes from step 4.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))
  [events] = [f for f in os.listdir(workdir) if 'tfevents' in f]
  with open(os.path.join(workdir, events), 'ab') as f:
    f.write(b'\x20\x00\x00')
  train.train_and_evaluate(config, workdir)
  timeless = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]
  assert timeless(metrics(workdir)) == timeless(first)
  assert [f for f in os.listdir(workdir) if 'tfevents' in f] == [events]
  scalars = tensorboard_scalars(workdir)
  assert scalars['loss'] == [2, 4, 6] and scalars['eval_top1'] == [4, 6]
  # The file reads to its end: the cut record was dropped, the resumed run's events follow.
  from tensorboard.backend.event_processing import event_file_loader
  read = list(event_file_loader.EventFileLoader(os.path.join(workdir, events)).Load())
  restarts = [e.step for e in read if e.HasField('session_log')]
  # Every start's (the first start's twice: TensorBoard's loader skips a run's first), then the
  # rerun's and the resumed run's.
  assert restarts == [1, 1, 7, 5]
  assert read[-1].step == 6 and read[-1].summary.value[0].tag == 'eval_loss'


def test_a_run_that_died_evaluating_a_checkpointed_step_evaluates_it_on_resume(tmp_path):
  workdir = str(tmp_path)
  config = tiny_config(num_train_steps=6, checkpoint_every_steps=4, eval_every_steps=4)
  train.train_and_evaluate(config, workdir)
  first = metrics(workdir)
  # Killed while evaluating step 4, after its checkpoint: no step 6, no eval row of step 4.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))
  for name in os.listdir(workdir):
    if 'tfevents' in name:
      os.remove(os.path.join(workdir, name))
  workdir_lib.write_atomically(os.path.join(workdir, 'metrics.jsonl'), ''.join(
      json.dumps(r) + '\n' for r in first if r['step'] < 4 or 'loss' in r and r['step'] == 4))
  train.train_and_evaluate(config, workdir)
  timeless = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]
  assert timeless(metrics(workdir)) == timeless(first)


def test_inception_resnet_logs_the_dying_network_diagnostics(straight):
  rows = [e for e in metrics(straight) if 'loss' in e]
  for row in rows:
    assert 0.0 < row['dead_fraction'] < 1.0 and 0.0 <= row['dead_channels'] < 1.0
    assert all(row[name] > 0 for name in diagnostics.RESIDUAL)
  assert set(diagnostics.PRE_POOL + diagnostics.RESIDUAL) <= set(tensorboard_scalars(straight))


def test_inception_v4_logs_no_diagnostics_by_default(tmp_path):
  config = tiny_config(num_train_steps=2, log_every_steps=1, eval_every_steps=2,
                       **{'model.name': 'inception_v4'})
  train.train_and_evaluate(config, str(tmp_path))
  rows = [e for e in metrics(str(tmp_path)) if 'loss' in e]
  assert len(rows) == 2
  assert not any(k in row for row in rows for k in diagnostics.PRE_POOL + diagnostics.RESIDUAL)


def test_a_run_resumes_with_the_diagnostics_switched_off_and_on(straight, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  train.train_and_evaluate(tiny_config(num_train_steps=STEPS + 2, diagnostics=False), workdir)
  train.train_and_evaluate(tiny_config(num_train_steps=STEPS + 4), workdir)
  rows = {e['step']: e for e in metrics(workdir) if 'loss' in e}
  assert 'dead_fraction' not in rows[STEPS + 2] and 0 < rows[STEPS + 4]['dead_fraction'] < 1
  # Both resumed from the checkpoints (none set aside as unreadable; the first steps untouched).
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_corrupt'))
  assert [rows[s] for s in sorted(rows) if s <= STEPS] == [
      e for e in metrics(straight) if 'loss' in e]
