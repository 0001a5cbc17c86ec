"""Weight conversion: Keras parity on random weights (Keras comes with TensorFlow: no download)."""

import jax
import numpy as np
import pytest

from inception_jax import weights
from inception_jax.models import create

from train_utils import assert_trees_equal


def randomize_batchnorm_statistics(keras_model, rng):
  """Keras starts BatchNorm at mean 0, variance 1; random statistics make the check meaningful."""
  for layer in keras_model.layers:
    if layer.__class__.__name__ == 'BatchNormalization':
      beta, mean, var = layer.get_weights()
      layer.set_weights([rng.normal(0, 0.1, beta.shape), rng.normal(0, 0.1, mean.shape),
                         rng.uniform(0.5, 1.5, var.shape)])


@pytest.fixture(scope='module')
def keras_models():
  """Keras' applications by name, built on first use (seconds each), with random statistics."""
  import keras
  built = {}

  def get(app):
    if app not in built:
      keras.utils.set_random_seed(0)
      built[app] = getattr(keras.applications, app)(weights=None, classifier_activation=None)
      randomize_batchnorm_statistics(built[app], np.random.default_rng(0))
    return built[app]
  return get


@pytest.mark.parametrize('name,app', [('inception_resnet_v2', 'InceptionResNetV2'),
                                      pytest.param('inception_v3', 'InceptionV3',
                                                   marks=pytest.mark.quick)])
def test_keras_parity(name, app, keras_models):
  keras_model = keras_models(app)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
  expected = np.asarray(keras_model(images, training=False))

  variables = weights.from_keras(keras_model, name)
  model = create(name, num_classes=1000)
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
  assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_keras_weights_file_of_the_other_model(keras_models, tmp_path):
  """An .h5 weights file is checked by its shapes before Keras loads it (Keras' own error for a
  file of another model is hundreds of lines)."""
  keras_model = keras_models('InceptionV3')
  path = str(tmp_path / 'v3.weights.h5')
  keras_model.save_weights(path)
  with pytest.raises(weights.ConversionError, match=r"The 378 weights of .*v3\.weights\.h5 do "
                     r"not have the shapes of Keras' InceptionResNetV2\. They fit inception_v3\.$"
                     ) as error:
    weights.from_keras(path, 'inception_resnet_v2')
  assert error.value.fits == ('inception_v3',)
  assert_trees_equal(weights.from_keras(path, 'inception_v3'),
                     weights.from_keras(keras_model, 'inception_v3'))


# ------------------------------------------------------------------------------------------ timm

@pytest.mark.quick
@pytest.mark.parametrize('name', weights.TIMM_MODELS)
def test_timm_layout_converts_completely(name):
  """timm's real names and shapes (recorded from timm by tests/data/make_timm_layouts.py), with
  random values (`weights.random_state_dict`)."""
  from flax.traverse_util import flatten_dict

  from inception_jax.models.summary import abstract_variables
  state = weights.random_state_dict(name)
  variables = weights.from_timm(state, name)
  options = weights.options_from_variables(variables, name, 'timm')
  assert options['bn_scale'] and options['num_classes'] == 1000
  assert options['aux_logits'] == (name == 'inception_v3')
  expected = flatten_dict(abstract_variables(create(name, **options), 299))
  converted = flatten_dict(variables)
  assert converted.keys() == expected.keys()
  assert all(converted[k].shape == expected[k].shape for k in expected)
  # Every source tensor lands somewhere, once (num_batches_tracked counters are not weights).
  weights_in = [v for k, v in state.items() if not k.endswith('num_batches_tracked')]
  assert len(weights_in) == len(converted)
  assert sum(v.size for v in weights_in) == sum(v.size for v in converted.values())
  first = {'inception_v4': 'features.0', 'inception_resnet_v2': 'conv2d_1a',
           'inception_v3': 'Conv2d_1a_3x3'}[name]
  np.testing.assert_array_equal(variables['params']['Conv2d_1a_3x3']['kernel'],
                                state[f'{first}.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['Conv2d_1a_3x3']['BatchNorm']['var'],
                                state[f'{first}.bn.running_var'])


def test_random_state_dict_is_timm_layout_with_plausible_values():
  layout = weights.timm_layout('inception_resnet_v2')
  state = weights.random_state_dict('inception_resnet_v2', seed=1)
  assert [(k, v.shape) for k, v in state.items()] == layout
  assert all(v > 0 for k, v in state.items() if k.endswith('running_var') for v in v)
  kernel = state['conv2d_1a.conv.weight']
  assert kernel.dtype == np.float32 and abs(kernel.std() - np.sqrt(2 / 27)) < 0.02
  assert not np.array_equal(kernel, weights.random_state_dict('inception_resnet_v2')[
      'conv2d_1a.conv.weight'])
  with pytest.raises(weights.ConversionError, match='timm has no inception_v5'):
    weights.timm_layout('inception_v5')


def test_pretrained_file_stands_in_a_random_file_when_it_cannot_download(tmp_path, monkeypatch):
  import sys
  import types
  hub = types.ModuleType('huggingface_hub')

  def offline(repo, filename):
    raise OSError(f'cannot reach huggingface.co for {repo}/{filename}')

  hub.hf_hub_download = offline
  monkeypatch.setitem(sys.modules, 'huggingface_hub', hub)
  found = weights.pretrained_file('inception_v4', str(tmp_path))
  assert not found.pretrained and found.path == str(tmp_path /
                                                     'inception_v4_random_timm_layout.safetensors')
  assert found.note.startswith('huggingface.co/timm/inception_v4.tf_in1k could not be downloaded '
                               '(OSError: cannot reach huggingface.co for timm/inception_v4.'
                               'tf_in1k/model.safetensors)')
  assert 'RANDOM values' in found.note
  assert_trees_equal(weights.from_timm(found.path, 'inception_v4'),
                     weights.from_timm(weights.random_state_dict('inception_v4'), 'inception_v4'))
  hub.hf_hub_download = lambda repo, filename: f'/cache/{repo}/{filename}'
  found = weights.pretrained_file('inception_v4', str(tmp_path))
  assert found == ('/cache/timm/inception_v4.tf_in1k/model.safetensors', True,
                   "timm's weights from huggingface.co/timm/inception_v4.tf_in1k")
  assert 'switched off' in weights.pretrained_file('inception_v4', str(tmp_path),
                                                   download=False).note


def test_timm_v3_without_aux_head_and_errors():
  state = {k: v for k, v in weights.random_state_dict('inception_v3').items()
           if not k.startswith('AuxLogits.')}
  variables = weights.from_timm(state, 'inception_v3')
  assert not weights.options_from_variables(variables, 'inception_v3', 'timm')['aux_logits']
  extra = {**state, 'extra.weight': np.zeros(3)}
  count = sum(not k.endswith('num_batches_tracked') for k in extra)
  with pytest.raises(weights.ConversionError, match=r'fit no layer of inception_v3 \(1\): '
                     r'extra\.weight\. They fit no timm model \(inception_v4, inception_resnet_v2, '
                     rf'inception_v3\): the state dict holds {count} tensors such as '):
    weights.from_timm(extra, 'inception_v3')
  bad = dict(state, **{'Mixed_6b.branch7x7_2.conv.weight': np.zeros((128, 128, 7, 1), np.float32)})
  with pytest.raises(weights.ConversionError, match=r'Mixed_6b.branch7x7_2 -> Mixed_6b/Branch_1/'
                     r'Conv2d_0b_1x7/kernel: expected shape \(1, 7, 128, 128\), found '
                     r'\(7, 1, 128, 128\)'):
    weights.from_timm(bad, 'inception_v3')
  missing = {k: v for k, v in state.items() if not k.startswith('Mixed_7c.branch_pool.')}
  with pytest.raises(weights.ConversionError, match='Mixed_7c: ConvBN layers: the model has 9, '
                     'timm has 8'):
    weights.from_timm(missing, 'inception_v3')


def test_timm_safetensors_file_needs_no_torch(tmp_path):
  from safetensors.numpy import save_file
  state = weights.random_state_dict('inception_resnet_v2', seed=3)
  path = str(tmp_path / 'model.safetensors')
  save_file({k: np.asarray(v) for k, v in state.items()}, path)
  from_file = weights.from_timm(path, 'inception_resnet_v2')
  assert_trees_equal(from_file, weights.from_timm(state, 'inception_resnet_v2'))


def test_timm_wrong_model_is_a_short_error_naming_the_one_that_fits():
  state = weights.random_state_dict('inception_v3')
  tensors = [k for k in state if not k.endswith('num_batches_tracked')]
  with pytest.raises(weights.ConversionError) as error:
    weights.from_timm(state, 'inception_v4')
  message = str(error.value)
  assert message.startswith(f'Tensors of the state dict that fit no layer of inception_v4 '
                            f'({len(tensors)}): {", ".join(tensors[:3])} and '
                            f'{len(tensors) - 3} more.')
  assert message.endswith(' They fit inception_v3.') and len(message) < 400
  assert error.value.names == tensors and error.value.fits == ('inception_v3',)
  with pytest.raises(weights.ConversionError, match='timm has no inception_v5; it covers '
                     'inception_v4, inception_resnet_v2, inception_v3. They fit inception_v3.'):
    weights.from_timm(state, 'inception_v5')


def torch_like_file(path):
  """A zip archive named like the ones `torch.save` writes (enough to be told apart)."""
  import zipfile
  with zipfile.ZipFile(path, 'w') as f:
    f.writestr('model/data.pkl', b'')
  return path


def test_timm_pth_without_torch_says_so(tmp_path, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ImportError, match='needs PyTorch'):
    weights.from_timm(torch_like_file(str(tmp_path / 'model.pth')), 'inception_v4')


def test_files_of_another_source_name_it(tmp_path):
  """Each reader tells the files of the other sources by their bytes, whatever their names."""
  import h5py
  from safetensors.numpy import save_file
  import tensorflow as tf
  files = {name: str(tmp_path / name) for name in ('a.safetensors', 'b.pth', 'c.h5', 'd.ckpt',
                                                   'e.txt')}
  save_file({'fc.weight': np.zeros((2, 2), np.float32)}, files['a.safetensors'])
  torch_like_file(files['b.pth'])
  with h5py.File(files['c.h5'], 'w') as f:
    f['dense/dense/kernel:0'] = np.zeros((2, 2), np.float32)
  tf.raw_ops.SaveV2(prefix=files['d.ckpt'], tensor_names=['a'], shape_and_slices=[''],
                    tensors=[tf.zeros(2)])
  with open(files['e.txt'], 'w') as f:
    f.write('not weights')
  formats = [weights.file_format(path) for path in files.values()]
  assert formats == ['safetensors', 'torch', 'hdf5', 'tf', None]
  assert weights.file_format(files['d.ckpt'] + '.index') == 'tf'
  assert weights.file_format(str(tmp_path)) == 'tf'  # a directory holding a checkpoint

  readers = {'timm': weights.from_timm, 'keras': weights.from_keras, 'slim': weights.from_slim}
  for path, source in zip(files.values(), ['timm', 'timm', 'keras', 'slim', None]):
    for reader in set(readers) - {source}:
      with pytest.raises(weights.FileFormatError) as error:
        readers[reader](path, 'inception_v3')
      assert error.value.source == source
      fix = f'convert it with --source={source} (weights.from_{source}).'
      assert str(error.value).endswith(fix if source else 'nor a file that another source reads.')


def randomize_torch_batchnorm(model, seed=0):
  import torch
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0, 0.1, generator=generator)
        module.running_mean.normal_(0, 0.1, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)


@pytest.mark.parametrize('name', weights.TIMM_MODELS)
def test_timm_parity(name):
  """Against timm itself: runs where torch and timm are installed (`pip install torch timm`)."""
  torch = pytest.importorskip('torch', reason='timm parity needs torch and timm installed')
  timm = pytest.importorskip('timm', reason='timm parity needs torch and timm installed')
  torch.manual_seed(0)
  kwargs = {'aux_logits': True} if name == 'inception_v3' else {}
  timm_model = timm.create_model(name, pretrained=False, **kwargs).eval()
  randomize_torch_batchnorm(timm_model)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
  with torch.no_grad():
    expected = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  expected = [np.asarray(e) for e in (expected if isinstance(expected, tuple) else (expected,))]

  variables = weights.from_timm(timm_model.state_dict(), name)
  model = create(name, **weights.options_from_variables(variables, name, 'timm'))
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  outputs = outputs if isinstance(outputs, tuple) else (outputs,)
  assert len(outputs) == len(expected)
  for ours, theirs in zip(outputs, expected):
    assert np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max() < 1e-4
    np.testing.assert_array_equal(np.asarray(ours).argmax(-1), theirs.argmax(-1))


# --------------------------------------------------------------------------------------- TF-slim

# Names read from TF-slim's nets/inception_{v4,resnet_v2,v3}.py, one per kind of layer.
REAL_SLIM_NAMES = {
    'inception_v4': ['InceptionV4/Conv2d_1a_3x3/weights',
                     'InceptionV4/Mixed_3a/Branch_1/Conv2d_0a_3x3/weights',
                     'InceptionV4/Mixed_6h/Branch_2/Conv2d_0e_1x7/BatchNorm/moving_variance',
                     'InceptionV4/Mixed_7d/Branch_2/Conv2d_0e_3x1/BatchNorm/beta',
                     'InceptionV4/AuxLogits/Conv2d_2a/weights',
                     'InceptionV4/AuxLogits/Aux_logits/biases',
                     'InceptionV4/Logits/Logits/weights'],
    'inception_resnet_v2': ['InceptionResnetV2/Mixed_5b/Branch_3/Conv2d_0b_1x1/weights',
                            'InceptionResnetV2/Repeat/block35_10/Conv2d_1x1/biases',
                            'InceptionResnetV2/Repeat_1/block17_20/Branch_1/Conv2d_0c_7x1/weights',
                            'InceptionResnetV2/Repeat_2/block8_9/Branch_1/Conv2d_0c_3x1/BatchNorm/moving_mean',
                            'InceptionResnetV2/Block8/Conv2d_1x1/weights',
                            'InceptionResnetV2/Conv2d_7b_1x1/BatchNorm/beta',
                            'InceptionResnetV2/AuxLogits/Conv2d_2a_5x5/weights',
                            'InceptionResnetV2/AuxLogits/Logits/weights',
                            'InceptionResnetV2/Logits/Logits/biases'],
    'inception_v3': ['InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5/weights',
                     'InceptionV3/Mixed_6a/Branch_0/Conv2d_1a_1x1/weights',
                     'InceptionV3/Mixed_7c/Branch_1/Conv2d_0c_3x1/weights',
                     'InceptionV3/AuxLogits/Conv2d_2b_1x1/weights',
                     'InceptionV3/Logits/Conv2d_1c_1x1/biases'],
}


def random_variables(model, seed):
  """Random values in the shapes of the model's variables (no compilation: fast on CPU)."""
  from inception_jax.models.summary import abstract_variables
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, s: (rng.uniform(0.5, 1.5, s.shape) if path[-1].key == 'var' else
                       rng.normal(0, 0.05, s.shape)).astype(np.float32),
      abstract_variables(model, 299))


def write_slim_checkpoint(prefix, variables, name, extra=None):
  """A TF1 checkpoint (the format of TF-slim's releases) with TF-slim's variable names; TF-slim's
  classifiers that are 1x1 convolutions get 4-D kernels."""
  from flax.traverse_util import flatten_dict
  import tensorflow as tf
  tensors = {}
  for path, value in flatten_dict(jax.tree_util.tree_map(np.asarray, variables)).items():
    value = np.asarray(value)
    slim = weights.slim_name(path[1:], name)
    if path[-1] == 'kernel' and value.ndim == 2 and 'Conv2d' in slim:
      value = value[None, None]
    tensors[slim] = value
  tensors.update(extra or {})
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors), shape_and_slices=[''] * len(tensors),
                    tensors=[tf.constant(v) for v in tensors.values()])
  return tensors


@pytest.mark.parametrize('name', list(weights.SLIM_SCOPES))
def test_slim_checkpoint_converts_with_and_without_background(tmp_path, name):
  model = create(name, num_classes=1001, aux_logits=True)
  variables = random_variables(model, seed=1)
  prefix = str(tmp_path / 'model.ckpt')
  written = write_slim_checkpoint(prefix, variables, name, extra={
      'global_step': np.asarray(10, np.int64),
      f'{weights.SLIM_SCOPES[name]}/Conv2d_1a_3x3/weights/RMSProp':
          np.zeros((3, 3, 3, 32), np.float32)})
  assert set(REAL_SLIM_NAMES[name]) <= set(written)

  kept = weights.from_slim(prefix, name, background='keep')
  assert_trees_equal(kept, variables)
  dropped = weights.from_slim(str(tmp_path), name)  # the directory works too
  options = weights.options_from_variables(dropped, name, 'slim')
  assert options == {'num_classes': 1000, 'aux_logits': True, 'bn_scale': False}
  head = create(name).aux_names[1]
  for scope in (['Logits'], ['AuxLogits', head]):
    ours, theirs = dropped['params'], variables['params']
    for s in scope:
      ours, theirs = ours[s], theirs[s]
    np.testing.assert_array_equal(ours['kernel'], theirs['kernel'][:, 1:])
    np.testing.assert_array_equal(ours['bias'], theirs['bias'][1:])
  assert 'AuxLogits' not in weights.from_slim(prefix, name, aux_logits=False)['params']

  if name == 'inception_v3':  # outputs: the 1000 real classes of the 1001-way network
    images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    full = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
    small = create(name, **options)
    converted = jax.jit(lambda v, x: small.apply(v, x))(dropped, images)
    for a, b in zip(converted, full):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b)[:, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.quick
def test_slim_moving_averages_leftovers_and_wrong_model(tmp_path):
  name = 'inception_v3'
  variables = jax.eval_shape(
      lambda: create(name, num_classes=1001).init(jax.random.key(0), np.zeros((1, 299, 299, 3))))
  variables = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.5, np.float32), variables)
  average = np.full((1001,), 0.25, np.float32)
  prefix = str(tmp_path / 'v3.ckpt')
  write_slim_checkpoint(prefix, variables, name, extra={
      'InceptionV3/Logits/Conv2d_1c_1x1/biases/ExponentialMovingAverage': average})
  assert np.all(weights.from_slim(prefix, name)['params']['Logits']['bias'] == 0.25)
  raw = weights.from_slim(prefix, name, moving_averages=False)
  assert np.all(raw['params']['Logits']['bias'] == 0.5)
  with pytest.raises(weights.ConversionError, match='has no InceptionV4/Logits/Logits/biases, '
                     "TF-slim's classifier of inception_v4. They fit inception_v3.$") as error:
    weights.from_slim(prefix, 'inception_v4')
  assert error.value.fits == ('inception_v3',)

  extra = str(tmp_path / 'extra.ckpt')
  write_slim_checkpoint(extra, variables, name, extra={'InceptionV3/Mixed_8a/weights': average})
  with pytest.raises(weights.ConversionError,
                     match=r'fit no variable of inception_v3 \(1\): InceptionV3/Mixed_8a/weights'):
    weights.from_slim(extra, name)
  with pytest.raises(weights.ConversionError, match='no auxiliary head'):
    weights.from_slim(prefix, name, aux_logits=True)
