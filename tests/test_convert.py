"""`python -m inception_jax.convert`: public weights -> an Orbax checkpoint and its model.json; a
file that does not fit the flags is a short error with the command that converts it."""

import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax import checkpoint, weights

from test_weights import write_slim_checkpoint
from train_utils import ROOT, assert_trees_equal


def convert_command(*flags):
  return subprocess.run([sys.executable, '-m', 'inception_jax.convert', *flags], cwd=ROOT,
                        capture_output=True, text=True, check=True)


def failed_command(*flags):
  """The output of a conversion that fails as it should: a few lines, no traceback."""
  result = subprocess.run([sys.executable, '-m', 'inception_jax.convert', *flags], cwd=ROOT,
                          capture_output=True, text=True)
  output = result.stdout + result.stderr
  assert result.returncode != 0, output
  assert 'Traceback' not in output and len(output.splitlines()) < 10 and len(output) < 1500, output
  return output


def suggested_command(output):
  """The arguments of the command line that a failed conversion suggests."""
  lines = output.splitlines()
  at = next(i for i, line in enumerate(lines) if line.startswith('To convert it, rerun with'))
  words = shlex.split(lines[at + 1])
  assert words[:3] == ['python', '-m', 'inception_jax.convert']
  return words[3:]


def test_convert_command_writes_a_checkpoint_that_loads(tmp_path):
  """A wrong --model names the one the file fits; the command it suggests converts the file."""
  import keras
  keras.utils.set_random_seed(1)
  keras_model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
  path = str(tmp_path / 'v3.keras')
  keras_model.save(path)
  output = str(tmp_path / 'converted')
  error = failed_command('--source=keras', '--model=inception_v4', f'--input={path}',
                         f'--output={output}')
  assert error.startswith(f'error: --input={path} does not fit --model=inception_v4: Keras has no '
                          'inception_v4')
  flags = suggested_command(error)
  assert flags == ['--source=keras', '--model=inception_v3', f'--input={path}',
                   f'--output={output}']
  result = convert_command(*flags)
  assert 'Wrote inception_v3' in result.stdout
  loaded = jax.tree_util.tree_map(np.asarray, checkpoint.load_variables(output))
  assert_trees_equal(loaded, weights.from_keras(keras_model, 'inception_v3'))
  record = checkpoint.ModelRecord.read(output)
  assert (record.model, record.classes, record.image_size) == ('inception_v3', 'imagenet', 299)
  assert record.options == {'num_classes': 1000, 'aux_logits': False, 'bn_scale': False}
  assert record.source == f'keras:{path}'


def test_timm_file_with_wrong_model_or_source_says_what_fits(tmp_path):
  """The case of issue 12: timm's Inception-ResNet-v2 (1,102 tensors) given as inception_v4."""
  from safetensors.numpy import save_file
  layout = weights.timm_layout('inception_resnet_v2')
  path = str(tmp_path / 'irv2.safetensors')
  save_file({key: np.zeros(shape, np.float32) for key, shape in layout}, path)
  output = str(tmp_path / 'converted')
  error = failed_command('--source=timm', '--model=inception_v4', f'--input={path}',
                         f'--output={output}')
  assert error.startswith(f'error: --input={path} does not fit --model=inception_v4: Tensors of '
                          'the state dict that fit no layer of inception_v4 (1,102): ')
  assert 'and 1,099 more. They fit inception_resnet_v2.\n' in error
  assert suggested_command(error) == ['--source=timm', '--model=inception_resnet_v2',
                                      f'--input={path}', f'--output={output}']
  # Another source's reader names the source, and the model that the file fits there.
  error = failed_command('--source=slim', '--model=inception_v4', f'--input={path}',
                         f'--output={output}')
  assert error.startswith(f'error: {path} is a .safetensors file, not a TF1 checkpoint: convert it '
                          'with --source=timm')
  assert suggested_command(error)[:2] == ['--source=timm', '--model=inception_resnet_v2']
  missing = failed_command('--source=timm', '--model=inception_v4', f'--input={path}.missing',
                           f'--output={output}')
  assert f'error: --input {path}.missing does not exist.' in missing
  assert not (tmp_path / 'converted').exists()


def test_slim_checkpoint_with_wrong_model_says_what_fits(tmp_path, capsys):
  """In this process (TensorFlow takes seconds to start): the same code as the command's."""
  from inception_jax import cli, convert
  from inception_jax.models import create
  from inception_jax.models.summary import abstract_variables
  shapes = abstract_variables(create('inception_v3', num_classes=1001), 299)
  prefix = str(tmp_path / 'v3.ckpt')
  write_slim_checkpoint(prefix, jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                                       shapes), 'inception_v3')
  with pytest.raises(SystemExit) as exit_:
    cli.call(convert, ['--source=slim', '--model=inception_resnet_v2', f'--input={prefix}',
                       '--output=unused', '--background=keep'])
  error = capsys.readouterr().err
  assert exit_.value.code != 0 and len(error.splitlines()) < 10 and len(error) < 1500
  assert error.startswith(f'error: --input={prefix} does not fit --model=inception_resnet_v2: '
                          f'{prefix} has no InceptionResnetV2/Logits/Logits/biases')
  assert suggested_command(error) == ['--source=slim', '--model=inception_v3', f'--input={prefix}',
                                      '--output=unused', '--background=keep']
