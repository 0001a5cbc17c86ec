"""Weight conversion: Keras parity on random weights (Keras comes with TensorFlow: no download)."""

import jax
import numpy as np
import pytest

from inception_jax import weights
from inception_jax.models import create


def randomize_batchnorm_statistics(keras_model, rng):
  """Keras starts BatchNorm at mean 0, variance 1; random statistics make the check meaningful."""
  for layer in keras_model.layers:
    if layer.__class__.__name__ == 'BatchNormalization':
      beta, mean, var = layer.get_weights()
      layer.set_weights([rng.normal(0, 0.1, beta.shape), rng.normal(0, 0.1, mean.shape),
                         rng.uniform(0.5, 1.5, var.shape)])


@pytest.mark.parametrize('name,app', [('inception_resnet_v2', 'InceptionResNetV2'),
                                      ('inception_v3', 'InceptionV3')])
def test_keras_parity(name, app):
  import keras
  keras.utils.set_random_seed(0)
  keras_model = getattr(keras.applications, app)(weights=None, classifier_activation=None)
  rng = np.random.default_rng(0)
  randomize_batchnorm_statistics(keras_model, rng)
  images = rng.uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
  expected = np.asarray(keras_model(images, training=False))

  variables = weights.from_keras(keras_model, name)
  model = create(name, num_classes=1000)
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
  assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_keras_rejects_a_model_it_does_not_have():
  with pytest.raises(ValueError, match='Keras has no inception_v4'):
    weights.from_keras(None, 'inception_v4')


def test_convert_command_writes_a_checkpoint_that_loads(tmp_path):
  import subprocess
  import sys
  import keras
  from inception_jax import checkpoint
  from train_utils import ROOT, assert_trees_equal
  keras.utils.set_random_seed(1)
  keras_model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
  path = str(tmp_path / 'v3.keras')
  keras_model.save(path)
  output = str(tmp_path / 'converted')
  result = subprocess.run([sys.executable, '-m', 'inception_jax.convert', '--source=keras',
                           '--model=inception_v3', f'--input={path}', f'--output={output}'],
                          cwd=ROOT, capture_output=True, text=True, check=True)
  assert 'Wrote inception_v3' in result.stdout
  loaded = jax.tree_util.tree_map(np.asarray, checkpoint.load_variables(output))
  assert_trees_equal(loaded, weights.from_keras(keras_model, 'inception_v3'))
