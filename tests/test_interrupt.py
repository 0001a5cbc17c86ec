"""Ctrl-C (SIGINT), as a user presses it in the terminal that runs the job: the run saves at the
next step boundary, says in one line where and how to resume, and exits with 130; a second
Ctrl-C stops at once, in one line. In one process and in several (a terminal sends SIGINT to
every process of its foreground group)."""

import os
import re
import signal
import subprocess
import threading
import time

from inception_jax import stopping

import train_utils as tu


def saved_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit())


def lines(text):
  """The lines of `text`, less Orbax's hint that a save waited for the previous one (a loaded
  machine's, not the job's)."""
  return [line for line in text.splitlines()
          if line.strip() and 'Waiting for previous save to complete' not in line]


def start(workdir, *flags, **overrides):
  """The tiny config for 500 steps, checkpointing every 4 (stdout and stderr apart), in a
  process group of its own, as a shell runs a job."""
  return subprocess.Popen(tu.command(workdir, *flags, **{'num_train_steps': 500, **overrides}),
                          cwd=tu.ROOT, env=tu.environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)


def ctrl_c(proc):
  """SIGINT to every process of `proc`'s group, as a terminal sends it (a multi-process job's
  process runs as the child of a parent, `inception_jax/supervise.py`)."""
  os.killpg(proc.pid, signal.SIGINT)


def wait_for(proc, prefix):
  """Reads `proc`'s stdout up to a line starting with `prefix`; the rest: a thread's list."""
  for line in proc.stdout:
    if line.startswith(prefix):
      break
  rest = []
  threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True).start()
  return rest


def test_ctrl_c_saves_at_the_next_step_says_how_to_resume_and_exits_130(straight, tmp_path):
  workdir = str(tmp_path)
  proc = start(workdir)
  wait_for(proc, 'step 4/')  # logged just before the first checkpoint (step 4) is saved
  ctrl_c(proc)
  err = proc.communicate(timeout=300)[1]
  assert proc.returncode == stopping.EXIT_STATUS, err
  step = saved_steps(workdir)[-1]
  assert step > 4, saved_steps(workdir)
  assert lines(err) == [f'Interrupted: saved {workdir}/checkpoints/{step}; rerun the same command '
                        'to resume.'], err
  # The rerun resumes from it and ends as the uninterrupted run, bit for bit.
  assert step < tu.STEPS, f'the interrupted run got past step {tu.STEPS}: {step}'
  result = tu.run(workdir, num_train_steps=tu.STEPS)
  assert f'Resuming from {workdir}/checkpoints/{step}.' in result.stdout
  assert tu.losses(workdir) == tu.losses(straight)
  tu.assert_trees_equal(tu.final_variables(workdir), tu.final_variables(straight))


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
  workdir = str(tmp_path)
  proc = start(workdir)
  wait_for(proc, 'step 8/')  # after the checkpoint at step 4 finished
  ctrl_c(proc)
  time.sleep(0.3)  # a person's second Ctrl-C (two at once reach Python's handler as one)
  ctrl_c(proc)
  sent = time.monotonic()
  err = proc.communicate(timeout=60)[1]
  assert proc.returncode == stopping.EXIT_STATUS, err
  assert time.monotonic() - sent < 10
  assert len(lines(err)) == 1, err
  [line] = lines(err)
  assert re.fullmatch(r'Interrupted again: stopped at once, not saving step \d+; rerun the same '
                      r'command: it resumes from step (\d+) \(.*/checkpoints/\1\)\.', line), err
  assert f'it resumes from step {saved_steps(workdir)[-1]} ' in line
  assert 'Traceback' not in err


def test_ctrl_c_stops_every_process_at_the_same_step(tmp_path):
  """Two processes, each sent SIGINT as a terminal sends it to its foreground group."""
  workdir = str(tmp_path)
  procs = tu.start_processes(workdir, peer_timeout=10, num_train_steps=500,
                             checkpoint_every_steps=4, log_every_steps=2, eval_every_steps=8)
  try:
    wait_for(procs[0], 'step 6/')  # after the checkpoint at step 4 (only process 0 prints)
    for p in procs:
      ctrl_c(p)
    errs = [p.communicate(timeout=120)[1] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  assert [p.returncode for p in procs] == [stopping.EXIT_STATUS] * 2, errs
  step = saved_steps(workdir)[-1]
  assert step > 6
  assert lines(errs[0]) == [f'Interrupted: saved {workdir}/checkpoints/{step}; rerun the same '
                            'command to resume.'], errs[0]
  assert lines(errs[1]) == [], errs[1]  # only process 0 prints
