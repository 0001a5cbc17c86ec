"""inception_jax.lease: one job per workdir, on local disk and on an emulated bucket; and the
training command started twice at once on one workdir."""

import json
import os
import re
import subprocess
import threading

import pytest

from inception_jax import lease, train, workdir as wd
from inception_jax.errors import MissingError

from train_utils import ROOT, command, environment, metrics, tiny_config


@pytest.fixture(params=['local', 'bucket'])
def root(request, tmp_path):
  return str(tmp_path / 'run') if request.param == 'local' else (
      request.getfixturevalue('bucket') + '/run')


def holder(root):
  path = wd.join(root, wd.LEASE)
  return json.loads(wd.read_text(path)) if wd.exists(path) else None


def write_holder(root, **fields):
  """A lease as another job wrote it (`fields` replace this process's)."""
  other = lease.Lease(root)
  other.holder.update(fields)
  wd.makedirs(root)
  other._store.create(other.holder)
  return other.holder


def test_acquire_renew_release(root):
  lost = []
  job = lease.Lease(root, renew_s=0.2, on_lost=lost.append).acquire()
  first = holder(root)
  assert {first['host'], first['pid']} == {job.holder['host'], os.getpid()}
  assert set(first) == {'host', 'pid', 'started', 'renewed', 'token'}
  with pytest.raises(lease.WorkdirInUse, match=re.escape(
      f'is in use by another job (host {first["host"]}, pid {os.getpid()}, started '
      f'{first["started"]}')):
    lease.Lease(root).acquire()
  assert job.renew() and holder(root)['token'] == first['token']
  job.release()
  assert holder(root) is None and not lost
  assert wd.glob(root, '*') == []
  lease.Lease(root).acquire().release()  # free again


def test_a_stale_lease_is_taken_over_and_its_holder_stops(root):
  said, lost = [], []
  stalled = lease.Lease(root, renew_s=30, on_lost=lost.append).acquire()
  stalled._stop.set()  # a job that stalled: it renews no more
  stale = dict(stalled.holder, host='elsewhere', renewed='2026-01-01T00:00:00+00:00')
  stalled._generation = stalled._store.replace(stale, stalled._generation)
  taker = lease.Lease(root, say=said.append).acquire()
  assert len(said) == 1 and re.fullmatch(re.escape(
      f'Took over the lease of {root} from a dead job (host elsewhere, pid {os.getpid()}, started '
      f'{stale["started"]}): not renewed for ') + r'\d+ s \(more than 90 s\)\.', said[0]), said
  assert holder(root)['token'] == taker.holder['token']
  assert not stalled.renew()  # the stalled job learns it lost the lease
  stalled._stop.clear()
  stalled.renew_s = 0.01
  stalled._renew_every()
  assert lost and 'another job took this job\'s lease over by host' in lost[0]
  stalled.release()  # gives back nothing: the taker's lease stays
  assert holder(root)['token'] == taker.holder['token']
  taker.release()


def test_a_dead_pid_of_this_host_is_taken_over_at_once(root):
  killed = subprocess.Popen(['sleep', '60'])
  killed.kill()
  os.waitid(os.P_PID, killed.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
  dead = write_holder(root, pid=killed.pid)
  said = []
  lease.Lease(root, say=said.append).acquire().release()
  killed.wait()
  assert said == [f'Took over the lease of {root} from a dead job (host {dead["host"]}, pid '
                  f'{dead["pid"]}, started {dead["started"]}): pid {dead["pid"]} no longer runs '
                  'on this host.']


def test_of_jobs_racing_for_a_workdir_exactly_one_wins(root):
  for stale in (False, True):  # a free workdir, then a dead job's
    if stale:
      write_holder(root, host='elsewhere', renewed='2026-01-01T00:00:00+00:00')
    jobs = [lease.Lease(root, say=lambda line: None) for _ in range(8)]
    won, barrier = [], threading.Barrier(len(jobs))

    def race(job, won=won, barrier=barrier):
      barrier.wait()
      try:
        won.append(job.acquire())
      except lease.WorkdirInUse:
        pass
    threads = [threading.Thread(target=race, args=(job,)) for job in jobs]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    assert len(won) == 1 and holder(root)['token'] == won[0].holder['token']
    won[0].release()


def test_the_command_started_twice_on_one_workdir_runs_once(tmp_path):
  workdir = str(tmp_path)
  jobs = [subprocess.Popen(command(workdir, num_train_steps=12), cwd=ROOT, env=environment(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for _ in range(2)]
  outputs = [job.communicate(timeout=600) for job in jobs]
  assert sorted(job.returncode for job in jobs) == [0, 75], outputs
  (winner, (winner_out, _)), (_, (out, err)) = sorted(
      zip(jobs, outputs), key=lambda pair: pair[0].returncode)
  assert 'step 12/12' in winner_out
  assert 'step ' not in out and 'Training' not in out, out  # stopped before any compute
  line = [x for x in err.splitlines() if x.startswith('error:')]
  assert len(line) == 1 and re.search(
      rf'--workdir={re.escape(workdir)} is in use by another job \(host \S+, pid {winner.pid}, '
      r'started \d{4}-\d\d-\d\dT', line[0]), err
  rows = [(r['step'], 'eval' if 'eval_top1' in r else 'log') for r in metrics(workdir)]
  assert len(rows) == len(set(rows)) and (12, 'eval') in rows
  assert not os.path.exists(os.path.join(workdir, wd.LEASE))


def test_a_job_that_fails_at_its_start_gives_the_lease_back(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(MissingError):
    train.Trainer(tiny_config(init_from=str(tmp_path / 'nowhere')), workdir)
  assert holder(workdir) is None
  with lease.Lease(workdir) as other:
    with pytest.raises(lease.WorkdirInUse):
      train.Trainer(tiny_config(), workdir)
    assert holder(workdir)['token'] == other.holder['token']  # left to its holder
