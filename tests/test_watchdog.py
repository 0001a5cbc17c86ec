"""A process of a multi-process job that stops moving: frozen (SIGSTOP: no heartbeat either), or
stuck with its heartbeat going on (its main thread stopped, tests/stall/sitecustomize.py). The
job must stop within a bounded time naming it, and a process stopped and continued (SIGCONT)
within the timeout must cause no alarm. Each test leaves nothing running: its processes are
killed and continued in teardown."""

import contextlib
import os
import signal
import threading
import time

import pytest

from inception_jax import faults, progress

import train_utils as tu

STALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'stall')
RESUME = 'rerun the same command on every host: it resumes from step'


@contextlib.contextmanager
def two_processes(workdir, env=None):
  """Two processes (tu.start_processes, --peer_timeout=3), process 0's stdout lines in a list
  that a thread fills; in the end every process of both groups is killed and continued."""
  procs = tu.start_processes(workdir, env=env)
  lines = []
  threading.Thread(target=lambda: lines.extend(procs[0].stdout), daemon=True).start()
  try:
    yield procs, lines
  finally:
    for p in procs:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
        os.killpg(p.pid, signal.SIGCONT)
      p.wait()


def wait_for_step(lines, step, timeout=300):
  """Until process 0 logged step `step` or later."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if any(int(line.split()[1].split('/')[0]) >= step for line in list(lines)
           if line.startswith('step ')):
      return
    time.sleep(0.1)
  raise TimeoutError(f'no step {step} in {timeout} s: {lines[-5:]}')


def last_step(lines):
  return max((int(line.split()[1].split('/')[0]) for line in list(lines)
              if line.startswith('step ')), default=0)


def child(proc):
  """The training process that `proc` (the parent, supervise.py) runs."""
  [pid] = open(f'/proc/{proc.pid}/task/{proc.pid}/children').read().split()
  return int(pid)


def ended(proc, timeout):
  """(exit status, stderr) of `proc` once it ends, within `timeout` seconds."""
  err = proc.communicate(timeout=timeout)[1]
  return proc.returncode, err


@pytest.mark.parametrize('stuck', [1, 0], ids=['peer', 'coordinator'])
def test_a_stuck_process_whose_heartbeat_goes_on_is_named_and_the_job_stops(tmp_path, stuck):
  workdir = str(tmp_path)
  env = dict(tu.environment(), PYTHONPATH=os.pathsep.join(
      [STALL, *filter(None, [os.environ.get('PYTHONPATH')])]))
  with two_processes(workdir, env) as (procs, lines):
    wait_for_step(lines, 15)  # past the first checkpoint (step 10)
    # Stopped for half the timeout, then continued: no alarm, training goes on.
    os.killpg(procs[stuck].pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.killpg(procs[stuck].pid, signal.SIGCONT)
    wait_for_step(lines, last_step(lines) + 10, timeout=60)
    assert all(p.poll() is None for p in procs)
    os.kill(child(procs[stuck]), signal.SIGUSR1)  # its main thread stops at the next step
    stalled = time.monotonic()
    survivor = procs[1 - stuck]
    status, err = ended(survivor, timeout=120)
    elapsed = time.monotonic() - stalled
    stuck_status, stuck_err = ended(procs[stuck], timeout=30)
  what = f'process {stuck} of 2 (host {os.uname().nodename}) is stuck at step'
  assert status == faults.EXIT_STATUS, err
  assert what in err and 'while the others wait at step' in err and RESUME in err, err
  assert stuck_status == faults.EXIT_STATUS and what in stuck_err, stuck_err  # it stops too
  # The limit: max(--peer_timeout, 3 x the longest pause between steps), polling, the exit.
  assert elapsed < 60, elapsed


@pytest.mark.parametrize('frozen', [1, 0], ids=['peer', 'coordinator'])
def test_a_frozen_process_stops_the_others_within_the_timeout(tmp_path, frozen):
  """Every process of its group stopped (SIGSTOP), heartbeat and all: a frozen host."""
  workdir = str(tmp_path)
  with two_processes(workdir) as (procs, lines):
    wait_for_step(lines, 15)
    os.killpg(procs[frozen].pid, signal.SIGSTOP)
    stopped = time.monotonic()
    status, err = ended(procs[1 - frozen], timeout=120)
    elapsed = time.monotonic() - stopped
  what = ('process 1 of 2 (host ' if frozen == 1 else
          'the coordinator (process 0 of 2, 127.0.0.1:')
  assert status == faults.EXIT_STATUS, err
  assert what in err and RESUME in err, err
  assert elapsed < 3 * 1.5 + 10, elapsed  # the timeout, its polling, and the exit


def seen(step, phase, since, host=''):
  return progress.Seen(step, phase, since, host)


def test_the_processes_behind_a_stalled_job_are_the_stuck_ones():
  now, limit = 100.0, 10.0
  moving = {0: seen(12, 'training', 95.0), 1: seen(11, 'training', 80.0)}
  assert progress.stalled(moving, now, limit) is None  # process 0 moved 5 s ago
  waiting = {0: seen(12, 'training', 85.0), 1: seen(11, 'training', 80.0, 'h1')}
  assert progress.stalled(waiting, now, limit) == [1]
  message = progress.stall_message(waiting, [1], now, limit)
  assert message.startswith('process 1 of 2 (host h1) is stuck at step 11 while the others wait '
                            'at step 12: no progress for 15 s')
  # A later phase of the same step is ahead: 0 evaluates (in a collective) while 1 is stuck.
  evaluating = {0: seen(11, 'evaluating', 85.0), 1: seen(11, 'training', 80.0)}
  assert progress.stalled(evaluating, now, limit) == [1]
  # Those behind are busy (compiling at the start, saving, evaluating): never judged.
  for phase in ('starting', 'saving', 'evaluating', 'finishing'):
    assert progress.stalled({0: seen(12, 'training', 0.0), 1: seen(11, phase, 0.0)}, now,
                            limit) is None
  # All at one place: all named, as a collective or a device that is stuck.
  together = {0: seen(12, 'training', 0.0), 1: seen(12, 'training', 0.0)}
  assert progress.stalled(together, now, limit) == [0, 1]
  assert 'no process of 2 has moved past step 12' in progress.stall_message(together, [0, 1], now,
                                                                             limit)


def test_the_limit_follows_the_longest_pause_between_steps(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
  watch = progress.Progress(sync_every=4)
  watch.stepped(1)  # the first step: its compile is no pause between steps
  for step, pause in zip(range(2, 5), (0.1, 0.1, 2.0)):  # dispatched ahead, then a wait
    clock[0] += pause
    watch.stepped(step)
  assert watch.limit(3.0) is None  # not judged before sync_every steps are timed
  clock[0] += 0.1
  watch.stepped(5)
  assert watch.limit(3.0) == 6.0 and watch.limit(60.0) == 60.0
  with watch.busy('evaluating'):  # a long evaluation is no pause between steps
    clock[0] += 500.0
  clock[0] += 0.1
  watch.stepped(6)
  assert watch.limit(3.0) == 6.0
