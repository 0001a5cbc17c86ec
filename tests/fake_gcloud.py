#!/usr/bin/env python3
"""A stand-in for `gcloud compute tpus ...`, put first on PATH as `gcloud` (`install`): one TPU node
whose state lives in a JSON file (FAKE_STATE); every call is logged (FAKE_LOG).

Two worlds:

- Scripted (tests/test_launch.py): nothing runs. SCENARIO, one entry per time the job's log is
  streamed: 'preempt' (the slice is lost while the job runs), 'saved' (SIGTERM: it saved and
  exited 0), 'drop' (the connection drops, the job goes on), or the job's exit status.
- A local slice (FAKE_SLICE=DIR, tests/rehearsal.py): the slice's FAKE_WORKERS workers are local
  processes. Each worker has a disk of its own, DIR/disks/<slice>-<worker>, new and empty each
  time the slice is created; `tpu-vm scp` copies into it and `tpu-vm ssh` runs the command there
  (as HOME and working directory) with what a TPU VM's job finds: DIR/bin/python3 first on PATH,
  which skips `pip install` (the copied checkout is put on PYTHONPATH instead) and gives
  `python3 -m inception_jax.main` the coordinator (worker 0, on 127.0.0.1), the process count and
  this worker's index as flags, where a TPU VM's job reads them from the metadata server. With
  FAKE_BUCKET=gs://B and FAKE_BUCKET_DIR=PATH the job's gs://B paths are PATH (a shared local
  directory standing in for the bucket). `preempt`, `lose_host`, `lose_slice` and `freeze` are the
  faults, called by the rehearsal from outside.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

PYTHON3 = r'''#!/usr/bin/env bash
# python3 on a worker of the stand-in slice (tests/fake_gcloud.py).
if [ "$1 $2" = "-m pip" ]; then
  echo "(stand-in slice: pip install skipped; the copied checkout is on PYTHONPATH)"; exit 0
fi
if [ "$1 $2" = "-m inception_jax.main" ]; then
  set -- "$@" --coordinator_address="$FAKE_COORDINATOR" --num_processes="$FAKE_WORKERS" \
    --process_id="$FAKE_WORKER_ID"
fi
if [ -n "${FAKE_BUCKET_DIR:-}" ]; then  # a local directory stands in for the bucket
  set -- "${@//$FAKE_BUCKET/$FAKE_BUCKET_DIR}"
fi
exec "$FAKE_PYTHON" "$@"
'''


def install(bin_dir: str) -> str:
  """Puts this stand-in into `bin_dir` as `gcloud`; returns `bin_dir`."""
  os.makedirs(bin_dir, exist_ok=True)
  target = os.path.join(bin_dir, 'gcloud')
  with open(target, 'w') as f:
    f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} "$@"\n')
  os.chmod(target, 0o755)
  return bin_dir


def slice_environment(slice_dir: str, workers: int, state_file: str, log_file: str) -> dict:
  """The environment under which `gcloud` is this stand-in with a local slice of `workers`."""
  os.makedirs(slice_dir, exist_ok=True)
  return {'PATH': f'{install(os.path.join(slice_dir, "gcloud_bin"))}:{os.environ["PATH"]}',
          'FAKE_STATE': state_file, 'FAKE_LOG': log_file, 'FAKE_SLICE': slice_dir,
          'FAKE_WORKERS': str(workers), 'SCENARIO': ''}


@contextlib.contextmanager
def locked_state(state_file: str):
  """The node's state, read and written back under a lock (several gcloud calls run at once)."""
  with open(state_file + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = {'node': None, 'type': None, 'job': None, 'streams': 0, 'slice': 0, 'groups': {}}
    if os.path.exists(state_file):
      with open(state_file) as f:
        state.update(json.load(f))
    yield state
    with open(state_file + '.tmp', 'w') as f:
      json.dump(state, f)
    os.replace(state_file + '.tmp', state_file)


def disk(slice_dir: str, number: int, worker: int) -> str:
  return os.path.join(slice_dir, 'disks', f'slice{number}-worker{worker}')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _create_slice(state: dict, slice_dir: str, workers: int) -> None:
  """New, empty disks, and the coordinator's port."""
  state['slice'] += 1
  state['port'] = _free_port()
  state['groups'] = {}
  for worker in range(workers):
    os.makedirs(disk(slice_dir, state['slice'], worker))
  bin_dir = os.path.join(slice_dir, 'bin')
  os.makedirs(bin_dir, exist_ok=True)
  with open(os.path.join(bin_dir, 'python3'), 'w') as f:
    f.write(PYTHON3)
  os.chmod(os.path.join(bin_dir, 'python3'), 0o755)


def _worker_env(slice_dir: str, state: dict, worker: int, workers: int) -> dict:
  home = disk(slice_dir, state['slice'], worker)
  env = dict(os.environ, HOME=home, PYTHONPATH=os.path.join(home, 'inception_jax'),
             PATH=f'{os.path.join(slice_dir, "bin")}:{os.environ["PATH"]}',
             FAKE_PYTHON=sys.executable, FAKE_COORDINATOR=f'127.0.0.1:{state["port"]}',
             FAKE_WORKER_ID=str(worker), FAKE_WORKERS=str(workers))
  for name in ('FAKE_STATE', 'FAKE_LOG', 'FAKE_SLICE', 'SCENARIO'):
    env.pop(name, None)
  return env


def _ssh_or_scp(args: list[str], state_file: str, slice_dir: str) -> int:
  """`tpu-vm ssh|scp` on a local slice: on every worker named, at once; the worst status."""
  workers = int(os.environ['FAKE_WORKERS'])
  which = next(a.split('=', 1)[1] for a in args if a.startswith('--worker='))
  targets = range(workers) if which == 'all' else [int(which)]
  with locked_state(state_file) as state:
    if state['node'] != 'READY':
      sys.stderr.write('ssh: connect to host 10.0.0.2 port 22: Connection timed out\n')
      return 255
    procs = []
    for worker in targets:
      home = disk(slice_dir, state['slice'], worker)
      if args[3] == 'scp':
        source, target = args[4], args[5].split(':', 1)[1]
        shutil.copy(source, os.path.join(home, target))
        continue
      command = next(a.split('=', 1)[1] for a in args if a.startswith('--command='))
      # Its own process group, which the faults signal: everything it starts stays in it.
      proc = subprocess.Popen(['bash', '-c', command], cwd=home, start_new_session=True,
                              env=_worker_env(slice_dir, state, worker, workers))
      state['groups'].setdefault(str(worker), []).append(proc.pid)
      procs.append(proc)
  return max([p.wait() for p in procs] + [0])


def _processes(groups: list[int]) -> list[int]:
  """The live (not zombie) processes of the process groups `groups`."""
  found = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    if fields[0] != 'Z' and int(fields[2]) in groups:
      found.append(int(entry))
  return found


def _signal(groups: list[int], number: int) -> None:
  for group in groups:
    with contextlib.suppress(ProcessLookupError, PermissionError):
      os.killpg(group, number)


def _groups(state: dict, workers=None) -> list[int]:
  return [g for w, gs in state['groups'].items() if workers is None or int(w) in workers
          for g in gs]


def preempt(state_file: str, grace_s: float = 120.0) -> None:
  """A spot slice's preemption: the node stops (ssh fails), every process of every worker gets
  SIGTERM and, where still running after `grace_s`, SIGKILL; then the node is PREEMPTED."""
  with locked_state(state_file) as state:
    state['node'] = 'STOPPING'
    groups = _groups(state)
  _signal(groups, signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  while _processes(groups) and time.monotonic() < deadline:
    time.sleep(0.2)
  _signal(groups, signal.SIGKILL)
  with locked_state(state_file) as state:
    state['node'] = 'PREEMPTED'


def lose_slice(state_file: str) -> None:
  """The slice is lost at once: SIGKILL to everything on every worker, no warning."""
  with locked_state(state_file) as state:
    state['node'] = 'TERMINATED'
    _signal(_groups(state), signal.SIGKILL)


def lose_host(state_file: str, worker: int) -> None:
  """One worker's host goes down (SIGKILL to all it runs); the node stays READY."""
  with locked_state(state_file) as state:
    _signal(_groups(state, [worker]), signal.SIGKILL)


def freeze(state_file: str, worker: int) -> None:
  """One worker's host freezes (SIGSTOP to all it runs); the node stays READY."""
  with locked_state(state_file) as state:
    _signal(_groups(state, [worker]), signal.SIGSTOP)


def kill_everything(state_file: str) -> None:
  """What is left on the slice, at the end of a rehearsal (SIGKILL, stopped processes too)."""
  with locked_state(state_file) as state:
    _signal(_groups(state), signal.SIGKILL)


def main(args: list[str]) -> int:
  state_file = os.environ['FAKE_STATE']
  with open(os.environ['FAKE_LOG'], 'a') as log:
    log.write(json.dumps(args) + '\n')
  kind = ' '.join(args[2:4])
  slice_dir = os.environ.get('FAKE_SLICE')
  if slice_dir and kind in ('tpu-vm ssh', 'tpu-vm scp'):
    return _ssh_or_scp(args, state_file, slice_dir)
  command = next((a.split('=', 1)[1] for a in args if a.startswith('--command=')), '')
  scenario = os.environ.get('SCENARIO', '').split(',')

  def missing():
    sys.stderr.write('ERROR: (gcloud) NOT_FOUND: Resource not found\n')
    return 1
  with locked_state(state_file) as state:
    if state.pop('flaky', False) and kind.endswith('describe'):
      sys.stderr.write('ERROR: (gcloud) There was a problem refreshing your current auth tokens\n')
      return 1
    if kind == 'tpu-vm describe':
      if not state['node']:
        return missing()
      print(f"{state['node']}\t{state['type']}")
    elif kind == 'queued-resources describe':
      if not state['node']:
        return missing()
      print('ACTIVE')
    elif kind == 'queued-resources create':
      state['node'], state['type'] = 'READY', next(
          a.split('=', 1)[1] for a in args if a.startswith('--accelerator-type='))
      if slice_dir:
        _create_slice(state, slice_dir, int(os.environ['FAKE_WORKERS']))
    elif kind == 'queued-resources delete':
      state['node'] = None
    elif kind == 'tpu-vm ssh' and state['node'] != 'READY':
      sys.stderr.write('ssh: connect to host 10.0.0.2 port 22: Connection timed out\n')
      return 255
    elif kind == 'tpu-vm ssh' and 'nohup' in command:
      state['job'] = 'running'
    elif kind == 'tpu-vm ssh' and command.startswith('tail'):
      what = scenario[min(state['streams'], len(scenario) - 1)]
      state['streams'] += 1
      print('step 1/10 loss 6.9')
      if what == 'preempt':
        state['node'], state['job'] = 'PREEMPTED', None
      elif what != 'drop':
        state['job'] = 'preempted' if what == 'saved' else f'exit status {what}'
    elif kind == 'tpu-vm ssh' and command.startswith('if test -f'):
      print(state['job'] if state['job'] == 'running' else
            'idle' if 'echo idle' in command else state['job'])
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
