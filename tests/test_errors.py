"""Errors in the settings end in one or two lines naming the fix, as a user sees them."""

import os
import subprocess

import pytest

from inception_jax import errors

from train_utils import ROOT, command, environment

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"

CASES = {
    # name: (extra flags, what the message must say)
    'misspelt_field': (['--config.bach_size=8'],
                       ['--config.bach_size: the config has no such field',
                        'Did you mean "batch_size"']),
    'misspelt_nested_field': (['--config.model.dephmultiplier=2'],
                              ['--config.model.dephmultiplier', 'depth_multiplier']),
    'bad_value': (['--config.batch_size=eight'], ['--config.batch_size=eight', 'int()']),
    'bad_argument': (['--config=configs/demo.py:huge'],
                     ["configs/demo.py has no argument 'huge'", 'configs/demo.py:tiny']),
    'missing_file': (['--config=configs/nothere.py'],
                     ['--config=configs/nothere.py: no such config file']),
    'invalid_setting': (['--config.log_every_steps=0'],  # caught by the job, not by the flags
                        ['config.log_every_steps=0 must be positive']),
    'required_field': (['--config=configs/finetune.py:iv3'],
                       ['This config needs --config.init_from=DIR: a directory written by']),
}


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Every case's (exit status, stderr), run concurrently as a user would run them."""
  runs = {}
  for name, (flags, _) in CASES.items():
    workdir = str(tmp_path_factory.mktemp(name))
    runs[name] = subprocess.Popen(command(workdir, *flags), cwd=ROOT, env=environment(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return {name: (p.wait(timeout=300), p.communicate()[1]) for name, p in runs.items()}


@pytest.mark.parametrize('name', sorted(CASES))
def test_setting_errors_are_two_lines_naming_the_fix(outcomes, name):
  status, stderr = outcomes[name]
  assert status == errors.EXIT_STATUS, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 2 and 'Traceback' not in stderr, stderr
  assert lines[0].startswith('error: ') and f'{errors.TRACEBACK}=1' in lines[1]
  for text in CASES[name][1]:
    assert text in lines[0]
  assert '\\' not in lines[0]  # no escaped quotes


def test_traceback_on_request(tmp_path):
  env = dict(environment(), **{errors.TRACEBACK: '1'})
  result = subprocess.run(command(str(tmp_path), '--config.bach_size=8'), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'Traceback (most recent call last)' in result.stderr
  assert 'Did you mean "batch_size"' in result.stderr
  assert not os.listdir(tmp_path)  # nothing was started


def test_user_errors_are_the_builtin_kinds_for_the_python_api():
  from inception_jax.models import create
  with pytest.raises(ValueError, match='Unknown model'):
    create('inception_v5')
  assert issubclass(errors.MissingError, FileNotFoundError)
