"""The Cloud TPU pod rehearsal (tests/rehearsal.py, also a script): launch/tpu_pod.sh against a
stand-in gcloud whose slice is 2 local processes x 2 CPU devices, through a preemption, a lost host,
a lost slice and a frozen host; then the checks, one test each, on the one rehearsal (13 minutes,
measured without the frozen host, on 2 cores shared with other work, load average 6 to 9; `pytest
--durations` reports it under the first test's setup)."""

import re

import pytest

import fake_gcloud
import rehearsal as rh

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def rehearsed(tmp_path_factory, request):
  bucket = (request.getfixturevalue('gcs_emulator').bucket('rehearsal') if rh.STORAGE == 'gcs'
            else 'gs://rehearsal')
  return rh.rehearse(str(tmp_path_factory.mktemp('rehearsal')), bucket, rh.STORAGE)


def test_the_launcher_brings_the_job_back_after_each_fault(rehearsed):
  rh.check_launcher(rehearsed)
  out = rehearsed.launcher_output
  assert [f for f, _, _ in rehearsed.faults] == list(rh.DEFAULT_FAULTS)
  assert 'is PREEMPTED: deleting it to create it again' in out  # the preemption
  first = fake_gcloud.disk(f'{rehearsed.root}/slice', 1, 0)  # worker 0 of the first slice
  with open(f'{first}/inception_jax.log') as f:
    assert 'Preempted: saved' in f.read()
  assert 'is TERMINATED: deleting it to create it again' in out  # the lost slice
  # The lost host (or the frozen one), named with its host.
  assert re.search(r'process 1 of 2 (\(host [^)]*\) )?stopped responding', out), out[-3000:]
  assert out.count('the job stopped on a fault') >= 2  # the lost host, the frozen one
  assert len(rehearsed.disks()) == 3 * rehearsed.workers  # new disks for each new slice


def test_the_final_parameters_equal_an_uninterrupted_run_bit_for_bit(rehearsed):
  rh.check_bit_exact(rehearsed)


def test_each_metrics_row_once(rehearsed):
  rh.check_metrics_once(rehearsed)


def test_tensorboard_shows_one_run_with_each_step_once(rehearsed):
  rh.check_tensorboard_once(rehearsed)


def test_nothing_is_written_outside_the_bucket(rehearsed):
  rh.check_nothing_outside_the_bucket(rehearsed)


def test_evaluate_and_plot_read_the_result(rehearsed):
  rh.check_evaluate_and_plot(rehearsed)
