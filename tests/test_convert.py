"""`python -m inception_jax.convert`: public weights -> an Orbax checkpoint and its model.json."""

import subprocess
import sys

import jax
import numpy as np

from inception_jax import checkpoint, weights

from train_utils import ROOT, assert_trees_equal


def convert_command(*flags):
  return subprocess.run([sys.executable, '-m', 'inception_jax.convert', *flags], cwd=ROOT,
                        capture_output=True, text=True, check=True)


def test_convert_command_writes_a_checkpoint_that_loads(tmp_path):
  import keras
  keras.utils.set_random_seed(1)
  keras_model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
  path = str(tmp_path / 'v3.keras')
  keras_model.save(path)
  output = str(tmp_path / 'converted')
  result = convert_command('--source=keras', '--model=inception_v3', f'--input={path}',
                           f'--output={output}')
  assert 'Wrote inception_v3' in result.stdout
  loaded = jax.tree_util.tree_map(np.asarray, checkpoint.load_variables(output))
  assert_trees_equal(loaded, weights.from_keras(keras_model, 'inception_v3'))
  record = checkpoint.ModelRecord.read(output)
  assert (record.model, record.classes, record.image_size) == ('inception_v3', 'imagenet', 299)
  assert record.options == {'num_classes': 1000, 'aux_logits': False, 'bn_scale': False}
  assert record.source == f'keras:{path}'
