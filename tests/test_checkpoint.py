"""The model record (model.json) that every checkpoint of the project carries."""

import pytest

from configs import demo
from inception_jax import checkpoint as ckpt
from inception_jax.data import create_source
from inception_jax.models import create

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"


def tiny_record():
  config = demo.get_config('tiny')
  source = create_source(config.dataset, batch_size=16, eval_batch_size=16, seed=0)
  return ckpt.ModelRecord.for_training(config, source)


def test_training_record_round_trips_and_resolves_every_option(tmp_path):
  record = tiny_record()
  assert (record.model, record.image_size, record.classes) == (
      'inception_resnet_v2', 16, [str(d) for d in range(10)])
  assert record.options['repeats'] == [1, 1, 1]  # as JSON has it
  record.write(str(tmp_path))
  again = ckpt.ModelRecord.read(str(tmp_path))
  assert again == record
  step = tmp_path / 'checkpoints' / '8'
  step.mkdir(parents=True)
  assert ckpt.ModelRecord.read(str(step)) == record  # a step's record is its workdir's
  assert ckpt.ModelRecord.read(str(step), step_dirs=False) is None

  options = record.resolved_options()
  assert options['repeats'] == (1, 1, 1) and options['num_classes'] == 10
  assert options['bn_epsilon'] == 1e-3  # not recorded: the network's default
  assert options['residual_scale'] == (0.17, 0.10, 0.20)


def test_differences_name_the_flags_to_pass():
  record = tiny_record()
  network = create('inception_resnet_v2', num_classes=10, depth_multiplier=0.125,
                   repeats=(1, 2, 1), small_inputs=True, scan_blocks=False)
  differences = record.differences(network, network.structure_options)
  assert differences == {'repeats': (1, 1, 1), 'scan_blocks': True}
  assert ckpt.config_overrides(differences) == ("'--config.model.repeats=(1, 1, 1)' "
                                            '--config.model.scan_blocks=True')


def test_a_record_with_fields_of_a_later_version_still_reads(tmp_path):
  (tmp_path / ckpt.MODEL_INFO).write_text(
      '{"model": "inception_v4", "options": {"num_classes": 1001}, "written_by": "v9"}')
  record = ckpt.ModelRecord.read(str(tmp_path))
  assert record.model == 'inception_v4' and record.resolved_options()['num_classes'] == 1001
  with pytest.raises(ValueError, match="Unknown model 'inception_v9'"):
    ckpt.ModelRecord('inception_v9', {}).resolved_options()


def test_lists_from_json_or_configs_compare_equal_to_tuples():
  network = create('inception_resnet_v2', residual_scale=[0.1, 0.1, 0.1], repeats=[1, 1, 1])
  assert network.residual_scale == (0.1, 0.1, 0.1) and network.repeats == (1, 1, 1)
  record = ckpt.ModelRecord('inception_resnet_v2', {'residual_scale': [0.1, 0.1, 0.1],
                                                    'repeats': [1, 1, 1]})
  assert record.differences(network, network.numeric_options + network.structure_options) == {}


@pytest.fixture
def fresh_fault_record(monkeypatch):
  from inception_jax import faults
  monkeypatch.setattr(faults, '_SAVED', [])
  monkeypatch.setattr(faults, '_PENDING', [])
  return faults


def test_poll_notes_a_background_save_once_it_finishes(tmp_path, fresh_fault_record):
  """A fault raised while storage is gone cannot list the checkpoints: it names the newest save
  the job saw finish, which `poll` records without waiting."""
  import time

  import numpy as np
  faults = fresh_fault_record
  workdir = str(tmp_path / 'run')
  checkpointer = ckpt.Checkpointer(workdir)
  try:
    checkpointer.save(4, {'w': np.arange(3.0)}, {'position': 4})
    assert faults.resume_hint(workdir, look=False).endswith(
        f'it resumes from step 4 if that save finished ({workdir}/checkpoints/4), otherwise from '
        'the start')
    deadline = time.monotonic() + 60
    while not faults._SAVED:
      assert time.monotonic() < deadline, 'the save never finished'
      checkpointer.poll()
      time.sleep(0.05)
    assert faults.resume_hint(workdir, look=False).endswith(
        f'it resumes from step 4 or a later one ({workdir}/checkpoints/4)')
    assert checkpointer.steps() == [4]
  finally:
    checkpointer.close()


def test_the_hint_without_any_save_says_it_starts_again(tmp_path, fresh_fault_record):
  assert fresh_fault_record.resume_hint(str(tmp_path), look=False).endswith(
      'no checkpoint was saved yet, so it starts again')


def test_the_hint_names_every_save_in_flight_when_storage_stops(tmp_path, fresh_fault_record):
  """Storage lost while save 4 waits for save 2 to finish: either may have finished."""
  faults = fresh_fault_record
  faults.note_saving(2)
  faults.note_saving(4)
  assert faults.resume_hint(str(tmp_path), look=False).endswith(
      f'it resumes from the newest of steps 2, 4 whose save finished (in {tmp_path}/checkpoints)'
      ', or from the start if none did')
  faults.note_saved(2)
  assert faults.resume_hint(str(tmp_path), look=False).endswith(
      f'it resumes from step 2 or a later one ({tmp_path}/checkpoints/2)')


@pytest.mark.parametrize('name', ['absl', 'gcsfs', 'fsspec.prefetcher'])
def test_library_logs_of_a_storage_fault_are_left_to_the_faults_message(name, caplog):
  """A library's traceback of a lost storage (fsspec's read-ahead logged one in the bucket test)
  is dropped: the fault's own few lines say it. Other warnings still show."""
  import logging

  from inception_jax import faults
  faults.quiet_library_faults()
  logger = logging.getLogger(name)
  caplog.set_level(logging.WARNING, logger=name)
  try:
    try:
      raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 40689)")
    except ConnectionRefusedError as refused:
      raise OSError('Cannot connect to host 127.0.0.1:40689 ssl:default') from refused
  except OSError:
    logger.exception('Consumer caught an error.')
  logger.warning('something else')
  assert [r.getMessage() for r in caplog.records if r.name == name] == ['something else']
