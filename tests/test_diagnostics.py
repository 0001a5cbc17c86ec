"""The dying-network diagnostics (paper Sec. 3.3) and the learned residual scale."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from inception_jax import optim, steps
from inception_jax.models import create, diagnostics

# The paper's Inception-ResNet-v2 schema, tiny: its last layer before the pool is the last block's
# ReLU(x + scale * residual), where the paper saw zeros.
TINY = dict(depth_multiplier=0.125, repeats=(1, 2, 2), small_inputs=True, num_classes=10)
IMAGES = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1.0, maxval=1.0)


def forward(model, variables, images=IMAGES):
  """A training-mode forward pass recording the diagnostics: (logits, their summary)."""
  logits, new = model.apply(variables, images, train=True, mutable=['batch_stats', 'diagnostics'],
                            rngs={'dropout': jax.random.key(1)})
  return logits, {k: float(v) for k, v in diagnostics.summarize(new['diagnostics']).items()}


def init(model):
  return model.init(jax.random.key(2), IMAGES, train=False)


def test_all_zero_activations_before_the_pool_read_as_a_dead_network():
  model = create('inception_resnet_v2_paper', **TINY)
  variables = init(model)
  _, alive = forward(model, variables)
  assert set(alive) == set(model.diagnostic_metrics)
  assert 0.0 < alive['dead_fraction'] < 1.0 and alive['dead_channels'] < 1.0
  # Every bias (BatchNorm's beta, the residual 1x1 convs' bias) far below zero: every ReLU gives 0.
  params = flax.traverse_util.flatten_dict(variables['params'])
  params = {k: jnp.full_like(v, -100.0) if k[-1] == 'bias' else v for k, v in params.items()}
  dead = {**variables, 'params': flax.traverse_util.unflatten_dict(params)}
  _, died = forward(model, dead)
  assert died['dead_fraction'] == 1.0 and died['dead_channels'] == 1.0


@pytest.mark.parametrize('name', ['inception_resnet_v1', 'inception_resnet_v2_paper'])
def test_a_block_with_scale_zero_changes_nothing_and_reads_zero(name):
  model = create(name, residual_scale=0.0, **TINY)
  _, recorded = forward(model, init(model))
  for key in diagnostics.RESIDUAL:
    assert recorded[key] == 0.0
  scaled = create(name, residual_scale=(0.1, 0.2, 0.3), **TINY)
  _, recorded = forward(scaled, init(scaled))
  assert all(recorded[key] > 0 for key in diagnostics.RESIDUAL)


def test_residual_ratio_is_the_scaled_branch_rms_over_the_input_rms():
  block = diagnostics.record_residual
  x, branch = jnp.full((2, 3, 3, 4), 2.0), jnp.full((2, 3, 3, 4), 0.5)

  class Probe(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x, branch):
      block(self, '8x8', x, branch)
      return x

  _, recorded = Probe().apply({}, x, branch, mutable=['diagnostics'])
  assert diagnostics.summarize(recorded['diagnostics']) == {'residual_ratio_8x8': 0.25}
  # Without the collection mutable (evaluation, prediction) nothing is recorded.
  assert Probe().apply({}, x, branch) is x


def test_scanned_and_rematerialised_blocks_record_the_same_as_unrolled():
  reference = create('inception_resnet_v2', **TINY)
  variables = init(reference)
  _, expected = forward(reference, variables)
  from inception_jax.models.scan import stack_blocks
  for options in (dict(scan_blocks=True), dict(scan_blocks=True, remat=True), dict(remat=True)):
    model = create('inception_resnet_v2', **TINY, **options)
    target = jax.eval_shape(lambda m=model: init(m))
    _, recorded = forward(model, stack_blocks(variables, target))
    assert recorded == pytest.approx(expected, rel=1e-5), options


def test_learned_scale_is_a_parameter_with_a_gradient_and_starts_as_the_fixed_scale():
  fixed = create('inception_resnet_v2', residual_scale=(0.3, 0.2, 0.1), **TINY)
  learned = create('inception_resnet_v2', residual_scale=(0.3, 0.2, 0.1),
                   learn_residual_scale=True, **TINY)
  variables = init(learned)
  scales = {k: v for k, v in flax.traverse_util.flatten_dict(variables['params']).items()
            if k[-1] == 'residual_scale'}
  # One scalar per scaled block (1 + 2 + 1; the released end's unscaled Block8 has none).
  assert {k[:-1]: float(v) for k, v in scales.items()} == pytest.approx({
      ('Repeat', 'block35_1'): 0.3, ('Repeat_1', 'block17_1'): 0.2,
      ('Repeat_1', 'block17_2'): 0.2, ('Repeat_2', 'block8_1'): 0.1})
  assert all(v.shape == () for v in scales.values())
  decayed = flax.traverse_util.flatten_dict(optim.kernel_mask(variables['params']))
  assert not any(decayed[k] for k in scales)  # no weight decay on the scales

  # Same function as the fixed scale at the start: the fixed model's variables, plus the scalars.
  fixed_params = flax.traverse_util.flatten_dict(variables['params'])
  fixed_params = {k: v for k, v in fixed_params.items() if k[-1] != 'residual_scale'}
  fixed_vars = {**variables, 'params': flax.traverse_util.unflatten_dict(fixed_params)}
  np.testing.assert_array_equal(fixed.apply(fixed_vars, IMAGES), learned.apply(variables, IMAGES))
  assert set(flax.traverse_util.flatten_dict(init(fixed)['params'])) == set(fixed_params)

  def loss(params):
    logits, _ = learned.apply({**variables, 'params': params}, IMAGES, train=True,
                              mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)})
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

  grads = flax.traverse_util.flatten_dict(jax.grad(loss)(variables['params']))
  assert all(float(jnp.abs(grads[k])) > 0 for k in scales)


def test_learned_scale_is_a_structure_option():
  cls = type(create('inception_resnet_v2'))
  assert 'learn_residual_scale' in cls.structure_options


def small_config(**fields):
  config = demo.get_config('tiny')
  config.update(fields)
  return config


@pytest.mark.parametrize('name,setting,expected', [
    ('inception_resnet_v2', None, diagnostics.PRE_POOL + diagnostics.RESIDUAL),
    ('inception_resnet_v2', False, ()),
    ('inception_v4', None, ()),
    ('inception_v4', True, diagnostics.PRE_POOL),
])
def test_which_models_record_diagnostics(name, setting, expected):
  config = small_config(diagnostics=setting)
  model = create(name, depth_multiplier=0.125, repeats=(1, 1, 1), small_inputs=True,
                 num_classes=10)
  assert steps.diagnostics_for(model, config) == expected


def test_checkpoints_leave_the_diagnostics_out_and_a_restored_state_gets_them_back():
  config = small_config()
  model = create('inception_resnet_v2', **TINY)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 10))
  names = steps.diagnostics_for(model, config)
  state = steps.create_train_state(init(model), tx, names)
  assert set(state.metric_sums) == {*steps.METRICS, *names, steps.DIAGNOSTICS_COUNT}
  step = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, schedule=lambda _: 0.1,
                                               config=config))
  batch = {'image': jnp.zeros((4, 16, 16, 3), jnp.uint8), 'label': jnp.arange(4)}
  state = step(step(state, batch), batch)
  sums = state.metric_sums
  assert float(sums[steps.DIAGNOSTICS_COUNT]) == 2.0 == float(sums['count'])
  assert 0 < float(sums['dead_fraction']) < 2.0
  saved = steps.checkpointed(state)
  assert set(saved.metric_sums) == set(steps.METRICS)
  back = steps.with_diagnostics(saved, names)
  assert float(back.metric_sums[steps.DIAGNOSTICS_COUNT]) == 0.0
  assert float(back.metric_sums['count']) == 2.0
  assert steps.with_diagnostics(saved, ()) is saved

