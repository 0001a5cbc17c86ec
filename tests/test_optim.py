"""The paper's optimizer, schedule and parameter average against TensorFlow's own implementations
(TF-slim trains with tf.compat.v1.train.RMSPropOptimizer, exponential_decay(staircase=True) and
ExponentialMovingAverage(num_updates=global_step)), which the project installs anyway."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from inception_jax import optim, tf_import

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"

tf = tf_import.tensorflow()

STEPS_PER_EPOCH = 3  # a decay every lr_decay_epochs * 3 steps: several decays in a few steps


def recipe(**overrides):
  config = default.get_config()
  config.lr_decay_epochs = 1.0
  config.update(overrides)
  return config


def test_staircase_schedule_is_tensorflows_exponential_decay():
  config = recipe()
  ours = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
  base = optim.scaled_learning_rate(config)
  for step in range(20):
    theirs = tf.compat.v1.train.exponential_decay(base, step, STEPS_PER_EPOCH, 0.94, staircase=True)
    np.testing.assert_allclose(float(ours(step)), float(theirs()), rtol=1e-6)
  assert float(ours(STEPS_PER_EPOCH - 1)) == pytest.approx(base)
  assert float(ours(STEPS_PER_EPOCH)) == pytest.approx(base * 0.94)


def test_warmup_ramps_linearly_then_decays_from_its_end():
  """No warm-up in TF-slim: ours ramps from 0, then runs TF's staircase counted from the ramp's
  end."""
  config = recipe(warmup_epochs=2.0)
  ours = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
  base, ramp = optim.scaled_learning_rate(config), 2 * STEPS_PER_EPOCH
  for step in range(20):
    if step < ramp:
      expected = base * step / ramp
    else:
      expected = float(tf.compat.v1.train.exponential_decay(
          base, step - ramp, STEPS_PER_EPOCH, 0.94, staircase=True)())
    np.testing.assert_allclose(float(ours(step)), expected, rtol=1e-6, atol=1e-12)


def tf_slim_steps(params, gradients, config):
  """TF-slim's update: the L2 term's gradient (weight_decay * w, kernels only) added to the loss's,
  clipped by global norm, then RMSPropOptimizer at exponential_decay's rate (momentum applied to
  the scaled step, mean square started at 1)."""
  names = sorted(params)
  variables = {n: tf.Variable(params[n], dtype=tf.float32) for n in names}
  step = tf.Variable(0, dtype=tf.int64)
  rate = tf.compat.v1.train.exponential_decay(  # eager: a callable, read at each step
      optim.scaled_learning_rate(config), step, STEPS_PER_EPOCH, config.lr_decay_rate,
      staircase=True)
  optimizer = tf.compat.v1.train.RMSPropOptimizer(
      rate, decay=config.rmsprop_decay, momentum=config.rmsprop_momentum,
      epsilon=config.rmsprop_epsilon)
  for grads in gradients:
    total = [tf.constant(grads[n]) + (config.weight_decay * variables[n] if n.endswith('kernel')
                                      else 0.0) for n in names]
    clipped, _ = tf.clip_by_global_norm(total, config.grad_clip_norm)
    optimizer.apply_gradients(zip(clipped, [variables[n] for n in names]), global_step=step)
  return {n: variables[n].numpy() for n in names}


def test_optimizer_matches_tensorflows_rmsprop_with_decay_clipping_and_schedule():
  config = recipe(weight_decay=4e-3, batch_size=256)  # a decay large enough to matter
  rng = np.random.default_rng(0)
  params = {'kernel': rng.normal(size=(3, 4)).astype(np.float32),
            'bias': rng.normal(size=(4,)).astype(np.float32)}
  # Some steps clipped (norm above 2), some not; enough steps for two decays of the rate.
  gradients = [{k: (rng.normal(size=v.shape) * scale).astype(np.float32) for k, v in params.items()}
               for scale in (3.0, 0.1, 1.0, 5.0, 0.01, 0.5, 2.0, 0.2)]
  expected = tf_slim_steps(params, gradients, config)

  tree = {'Logits': {'kernel': jnp.asarray(params['kernel']), 'bias': jnp.asarray(params['bias'])}}
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, STEPS_PER_EPOCH))
  state = tx.init(tree)
  for grads in gradients:
    updates, state = tx.update({'Logits': grads}, state, tree)
    tree = optax.apply_updates(tree, updates)
  for name in params:
    np.testing.assert_allclose(np.asarray(tree['Logits'][name]), expected[name], rtol=2e-6,
                               atol=2e-7, err_msg=name)
  # The parameters moved well beyond rounding: the comparison is not of two unchanged trees.
  assert np.abs(expected['kernel'] - params['kernel']).max() > 1e-2


def test_parameter_average_is_tensorflows_with_num_updates():
  """The average after update s (counted from 0) uses TF's decay min(d, (1 + s) / (10 + s)) and
  the parameters that update gave; it starts at the initial parameters."""
  rng = np.random.default_rng(1)
  initial = rng.normal(size=(5,)).astype(np.float32)
  trajectory = [rng.normal(size=(5,)).astype(np.float32) for _ in range(30)]

  variable = tf.Variable(initial)
  num_updates = tf.Variable(0, dtype=tf.int64)
  average = tf.train.ExponentialMovingAverage(0.9, num_updates=num_updates)
  average.apply([variable])  # creates the shadow at the initial value (and leaves it there)
  ours = jnp.asarray(initial)
  for step, params in enumerate(trajectory):
    variable.assign(params)
    num_updates.assign(step)
    average.apply([variable])
    ours = optim.ema_update(ours, jnp.asarray(params), 0.9, jnp.asarray(step))
    np.testing.assert_allclose(np.asarray(ours), average.average(variable).numpy(), rtol=1e-6,
                               atol=1e-7, err_msg=f'step {step}')
  # Past the ramp the decay is the configured one, 0.9: the average lags the parameters.
  assert float(optim.ema_decay(0.9, jnp.asarray(100))) == pytest.approx(0.9)
  assert not np.allclose(np.asarray(ours), trajectory[-1], atol=1e-2)
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(jnp.zeros(5))
