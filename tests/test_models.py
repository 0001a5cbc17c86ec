"""The model zoo: registry, sizes, shapes, options and numerics (all on CPU)."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_jax.models import (
  create,
  list_models,
  model_class,
  registry,
  stack_blocks,
  unstack_blocks,
)
from inception_jax.models.layers import ConvBN, FoldedBatchNorm, Ops
from inception_jax.models.scan import SEPARATOR
from inception_jax.models.summary import (
  abstract_variables,
  count_macs,
  count_params,
  image_spec,
  traced_macs,
)

MODELS = ['inception_v3', 'inception_v4', 'inception_resnet_v1', 'inception_resnet_v2',
          'inception_resnet_v2_paper']


def tiny(name, **options):
  """A narrow, shallow variant that compiles in seconds (same code paths as the full model)."""
  if name != 'inception_v3':
    options.setdefault('repeats', (2, 2, 3))
  return create(name, depth_multiplier=0.25, num_classes=7, **options)


def output_shape(model, size, **kwargs):
  variables = abstract_variables(model, size)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), variables, image_spec(size, 2))
  return jax.tree_util.tree_map(lambda o: o.shape, out)


@pytest.mark.quick
def test_list_models():
  assert list_models() == sorted(MODELS)


@pytest.mark.quick
def test_unknown_model_and_option_are_named():
  with pytest.raises(ValueError, match='inception_v5.*inception_resnet_v2'):
    create('inception_v5')
  with pytest.raises(ValueError, match="no option 'residual_scale'.*num_classes"):
    create('inception_v4', residual_scale=0.1)


@pytest.mark.parametrize('name,expected', [
    ('inception_v4', 42_679_816),
    ('inception_resnet_v2', 55_843_464),
    ('inception_v3', 23_834_568),
    ('inception_resnet_v1', 22_756_328),
])
@pytest.mark.quick
def test_parameter_counts_match_references(name, expected):
  model = create(name, num_classes=1000, bn_scale=True, aux_logits=False)
  assert count_params(abstract_variables(model, 299)) == expected


@pytest.mark.quick
def test_bn_scale_off_drops_one_gamma_per_bn_channel():
  with_gamma = abstract_variables(create('inception_v4', bn_scale=True), 299)
  without = abstract_variables(create('inception_v4', bn_scale=False), 299)
  bn_channels = sum(v.shape[0] for v in jax.tree_util.tree_leaves(without['batch_stats'])) // 2
  assert count_params(with_gamma) - count_params(without) == bn_channels


@pytest.mark.parametrize('name,gmacs', [
    ('inception_v3', 5.73), ('inception_v4', 12.28), ('inception_resnet_v2', 13.18),
    ('inception_resnet_v1', 6.2), ('inception_resnet_v2_paper', 9.3)])
def test_macs_near_reference_counts(name, gmacs):
  model = create(name)
  macs = count_macs(model, abstract_variables(model, 299), 299)
  assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_mac_counter_counts_convs_dense_layers_and_scanned_blocks():
  stem_conv = ConvBN(32, (3, 3), Ops(), stride=2, padding='VALID')
  # 149x149 outputs x 32 filters x 3x3x3 taps each.
  assert count_macs(stem_conv, abstract_variables(stem_conv, 299), 299) == 149 * 149 * 32 * 27
  dense = nn.Dense(10)
  variables = jax.eval_shape(dense.init, jax.random.key(0), jnp.zeros((1, 7)))
  assert traced_macs(dense.apply, variables, jax.ShapeDtypeStruct((1, 7), jnp.float32)) == 70
  scanned, unrolled = create('inception_v4', scan_blocks=True), create('inception_v4')
  assert (count_macs(scanned, abstract_variables(scanned, 299), 299)
          == count_macs(unrolled, abstract_variables(unrolled, 299), 299))


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('size', [299, 75, (75, 120), (320, 299)])
def test_logits_shape(name, size):
  assert output_shape(create(name), size, train=False) == (2, 1000)


@pytest.mark.parametrize('name', MODELS)
def test_aux_logits_and_feature_extraction(name):
  logits, aux = output_shape(create(name, aux_logits=True, num_classes=1001), 299, train=False)
  assert logits == aux == (2, 1001)
  features = output_shape(create(name, num_classes=0), 299, train=False)
  assert len(features) == 2 and features[0] == 2


@pytest.mark.quick
@pytest.mark.parametrize('name', MODELS)
def test_too_small_input_names_the_minimum(name):
  model = create(name)
  for size in [(74, 74), (299, 60)]:
    with pytest.raises(ValueError, match=f'at least 75x75 pixels, got {size[0]}x{size[1]}'):
      abstract_variables(model, size)


@pytest.mark.parametrize('name', MODELS)
def test_small_inputs_accepts_cifar_size_with_the_same_variables(name):
  small = create(name, num_classes=10, small_inputs=True)
  assert output_shape(small, 32, train=False) == (2, 10)
  full = jax.tree_util.tree_map(lambda v: v.shape,
                                abstract_variables(create(name, num_classes=10), 299))
  assert jax.tree_util.tree_map(lambda v: v.shape, abstract_variables(small, 32)) == full


@pytest.mark.parametrize('scan', [False, True])
def test_intermediate_feature_maps_under_tf_slim_names(scan):
  model = create('inception_resnet_v2', scan_blocks=scan)
  variables = abstract_variables(model, 299)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                               mutable=['intermediates']), variables, image_spec(299))
  shapes = {k: v['__call__'][0].shape for k, v in state['intermediates'].items()
            if '__call__' in v}
  assert shapes['Mixed_5b'] == (1, 35, 35, 320)
  assert shapes['Repeat_1'] == (1, 17, 17, 1088)  # TF-slim's PreAuxLogits
  assert shapes['Conv2d_7b_1x1'] == (1, 8, 8, 1536)


@pytest.mark.quick
def test_variable_names_follow_tf_slim_scopes():
  params = abstract_variables(create('inception_resnet_v2'), 299)['params']
  assert params['Conv2d_1a_3x3']['kernel'].shape == (3, 3, 3, 32)
  assert 'scale' not in params['Conv2d_1a_3x3']['BatchNorm']  # TF-slim has no gamma
  block = params['Repeat']['block35_1']
  assert block['Branch_2']['Conv2d_0c_3x3']['kernel'].shape == (3, 3, 48, 64)
  assert block['Conv2d_1x1']['bias'].shape == (320,)
  assert set(params['Repeat_2']) == {f'block8_{i}' for i in range(1, 10)}
  assert 'Block8' in params and params['Logits']['kernel'].shape == (1536, 1000)
  v3 = abstract_variables(create('inception_v3'), 299)['params']
  assert v3['Mixed_5c']['Branch_1']['Conv_1_0c_5x5']['kernel'].shape == (5, 5, 48, 64)
  assert v3['Mixed_7c']['Branch_1']['Conv2d_0c_3x1']['kernel'].shape == (3, 1, 384, 384)


@pytest.mark.quick
def test_residual_scale_option():
  model = create('inception_resnet_v2', residual_scale=0.3)
  assert model.scales == (0.3, 0.3, 0.3)
  with pytest.raises(ValueError, match='residual_scale takes one float or three'):
    abstract_variables(create('inception_resnet_v2', residual_scale=(0.1, 0.2)), 299)


@pytest.mark.quick
def test_layer_options_reach_ops_and_default_to_its_defaults():
  assert create('inception_v4').ops == Ops()
  options = dict(dtype=jnp.bfloat16, bn_scale=True, bn_momentum=0.9, bn_epsilon=1e-5,
                 depth_multiplier=0.5, avg_pool_include_pad=True)
  model = create('inception_v4', small_inputs=True, **options)
  assert model.ops == Ops(same_padding=True, **options)


def train_step_outputs(model, variables, x):
  return model.apply(variables, x, train=True, mutable=['batch_stats'],
                     rngs={'dropout': jax.random.key(2)})


@pytest.mark.parametrize('name', MODELS)
def test_scan_and_unrolled_compute_the_same_function(name):
  x = jax.random.uniform(jax.random.key(1), (2, 75, 75, 3), minval=-1, maxval=1)
  unrolled, scanned = tiny(name), tiny(name, scan_blocks=True)
  variables = jax.jit(lambda x: unrolled.init(jax.random.key(0), x))(x)
  target = jax.eval_shape(lambda x: scanned.init(jax.random.key(0), x), x)
  stacked = stack_blocks(variables, target)
  scanned_groups = [path for path, _ in jax.tree_util.tree_leaves_with_path(stacked['params'])
                    if any(SEPARATOR in str(key.key) for key in path)]
  assert scanned_groups, 'scan_blocks=True scanned nothing'
  assert jax.tree_util.tree_map(jnp.shape, stacked) == jax.tree_util.tree_map(jnp.shape, target)
  logits_u, state_u = jax.jit(lambda v, x: train_step_outputs(unrolled, v, x))(variables, x)
  logits_s, state_s = jax.jit(lambda v, x: train_step_outputs(scanned, v, x))(stacked, x)
  np.testing.assert_allclose(logits_s, logits_u, rtol=1e-5, atol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         unstack_blocks(state_s), state_u)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state_u['batch_stats'],
                                   variables['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed)), 'train=True must update every BatchNorm'


def loss_and_grads(model, variables, x, labels):
  """The cross-entropy of a training-mode forward pass and its gradients for the parameters."""
  def loss(params):
    logits, _ = train_step_outputs(model, {**variables, 'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return jax.jit(jax.value_and_grad(loss))(variables['params'])


def test_remat_gives_the_same_gradients():
  x = jax.random.uniform(jax.random.key(1), (2, 75, 75, 3), minval=-1, maxval=1)
  labels = jnp.array([1, 3])
  plain = tiny('inception_resnet_v2', scan_blocks=True)
  variables = jax.jit(lambda x: plain.init(jax.random.key(0), x))(x)
  _, g_plain = loss_and_grads(plain, variables, x, labels)
  _, g_remat = loss_and_grads(tiny('inception_resnet_v2', scan_blocks=True, remat=True),
                              variables, x, labels)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         g_remat, g_plain)


@pytest.mark.parametrize('name', ['inception_v4', 'inception_resnet_v2'])
def test_bfloat16_forward_is_finite_and_close_to_float32(name):
  x = jax.random.uniform(jax.random.key(1), (2, 75, 75, 3), minval=-1, maxval=1)
  f32, bf16 = tiny(name), tiny(name, dtype='bfloat16')
  variables = jax.jit(lambda x: f32.init(jax.random.key(0), x))(x)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(
      jax.eval_shape(lambda x: bf16.init(jax.random.key(0), x), x)))
  ref = jax.jit(lambda v, x: f32.apply(v, x))(variables, x)
  low = jax.jit(lambda v, x: bf16.apply(v, x))(variables, x)
  assert low.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(low)))
  assert float(jnp.linalg.norm(low - ref) / jnp.linalg.norm(ref)) < 0.05


def test_small_inputs_model_trains_on_32x32():
  """create('inception_resnet_v2', num_classes=10, small_inputs=True) learns a fixed CIFAR-size
  batch."""
  model = create('inception_resnet_v2', num_classes=10, small_inputs=True, depth_multiplier=0.25,
                 repeats=(1, 1, 2), scan_blocks=True, bn_momentum=0.9)
  images = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3), minval=-1, maxval=1)
  labels = jnp.arange(8) % 10
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(images)
  tx = optax.adam(1e-3)
  opt_state = tx.init(variables['params'])

  @jax.jit
  def step(variables, opt_state, i):
    def loss_fn(params):
      logits, state = model.apply({**variables, 'params': params}, images, train=True,
                                  mutable=['batch_stats'], rngs={'dropout': jax.random.key(i)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state
    (loss, state), g = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    updates, opt_state = tx.update(g, opt_state)
    params = optax.apply_updates(variables['params'], updates)
    return {'params': params, **state}, opt_state, loss

  losses = []
  for i in range(15):
    variables, opt_state, loss = step(variables, opt_state, i)
    losses.append(float(loss))
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses


def test_models_command_prints_the_zoo():
  out = subprocess.run([sys.executable, '-m', 'inception_jax.models', '--bn_scale'],
                       capture_output=True, text=True, check=True).stdout
  assert 'inception_resnet_v2             55,843,464    13.16  (1, 1000) float32' in out
  for name in MODELS:
    assert name in out


@pytest.mark.quick
@pytest.mark.parametrize('name', MODELS)
def test_every_option_has_exactly_one_kind(name):
  """Resume, init_from, predict and convert decide what to compare by these kinds: a new option
  must be declared in one of them."""
  cls = model_class(name)
  kinds = (cls.structure_options, cls.numeric_options, cls.runtime_options)
  declared = [option for kind in kinds for option in kind]
  assert sorted(declared) == registry.options(name), 'each option once, in exactly one kind'
  assert set(cls.adaptable_options) <= set(cls.structure_options + cls.numeric_options)
  assert cls.classifier_scopes()[0] == ('Logits',)
  assert cls.classifier_scopes()[1] == ('AuxLogits', cls.aux_names[1])


@pytest.mark.parametrize('dtype,rtol', [('float32', 2e-5), ('bfloat16', 1e-2)])
def test_folded_batchnorm_computes_flax_batchnorm(dtype, rtol):
  """The same variables, statistics and moving averages as nn.BatchNorm, and outputs and
  gradients equal to float32 rounding (bfloat16: to the rounding of its inputs and outputs)."""
  keys = jax.random.split(jax.random.key(0), 6)
  x = (3 * jax.random.normal(keys[0], (4, 9, 9, 16)) + 1.5).astype(dtype)
  options = dict(momentum=0.9, epsilon=1e-3, use_scale=True, dtype=dtype)
  reference = lambda train: nn.BatchNorm(use_running_average=not train, **options)
  folded = lambda train: FoldedBatchNorm(use_running_average=not train, **options)
  variables = reference(True).init(keys[1], x)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      folded(True).init(keys[1], x))
  variables = {'params': {'scale': 1 + 0.1 * jax.random.normal(keys[2], (16,)),
                          'bias': jax.random.normal(keys[3], (16,))},
               'batch_stats': {'mean': jax.random.normal(keys[4], (16,)),
                               'var': jnp.exp(jax.random.normal(keys[5], (16,)))}}
  def close(a, b):  # relative to the largest entry: sums of bfloat16 terms cancel
    b = np.asarray(b, np.float32)
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=rtol,
                               atol=rtol * np.abs(b).max())
  for train in (True, False):
    def loss(params, x, module):
      y, updates = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
      return jnp.sum(jnp.sin(y.astype(jnp.float32))), (y, updates)
    (_, (y_ref, stats_ref)), grads_ref = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True), static_argnums=2)(variables['params'], x,
                                                               reference(train))
    (_, (y, stats)), grads = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True), static_argnums=2)(variables['params'], x,
                                                               folded(train))
    assert y.dtype == y_ref.dtype == jnp.dtype(dtype)
    close(y, y_ref)
    jax.tree_util.tree_map(close, stats, stats_ref)
    jax.tree_util.tree_map(close, grads, grads_ref)


def test_folded_batchnorm_network_trains_like_the_default():
  x = jax.random.uniform(jax.random.key(1), (8, 75, 75, 3), minval=-1, maxval=1)
  labels = jnp.arange(8) % 5
  plain = tiny('inception_resnet_v2', scan_blocks=True)
  variables = jax.jit(lambda x: plain.init(jax.random.key(0), x))(x)
  loss, grads = loss_and_grads(plain, variables, x, labels)
  loss_folded, grads_folded = loss_and_grads(
      tiny('inception_resnet_v2', scan_blocks=True, bn_folded=True), variables, x, labels)
  # Not to float32 rounding: at a tiny network's 1x1 grids a batch of 8 gives BatchNorm 8 values
  # per channel, whose |mean| / std can be large, and folding the mean into the shift rounds x * a
  # first (FoldedBatchNorm's docstring). With a batch of 2 the gradients moved by 14%.
  np.testing.assert_allclose(loss_folded, loss, rtol=1e-3)
  leaves, leaves_folded = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_folded)
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(g)) for g in tree))
  difference = [a - b for a, b in zip(leaves_folded, leaves)]
  assert norm(difference) < 1e-2 * norm(leaves), norm(difference) / norm(leaves)
