"""The paper's optimizer as an optax chain, and the learning-rate schedule.

RMSProp with TF semantics (decay 0.9, momentum 0.9, epsilon 1.0 inside the square root, mean-square
accumulator started at 1.0), learning rate 0.045 decayed by 0.94 every two epochs (staircase),
gradients clipped by global norm 2.0, and L2 weight decay 4e-5 on conv and dense kernels only. The
decay term is added to the gradient before clipping, as TF-slim adds its L2 loss to the total loss.
"""

from __future__ import annotations

import jax
import optax

from inception_jax import frozen


def scaled_learning_rate(config) -> float:
  """`config.learning_rate` scaled linearly from `reference_batch_size` to `batch_size`."""
  return config.learning_rate * config.batch_size / config.reference_batch_size


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  base = scaled_learning_rate(config)
  decay_steps = max(1, round(config.lr_decay_epochs * steps_per_epoch))
  decay = optax.exponential_decay(base, decay_steps, config.lr_decay_rate, staircase=True)
  warmup_steps = round(config.warmup_epochs * steps_per_epoch)
  if not warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, base, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def kernel_mask(params):
  """True for conv and dense kernels (decayed), False for biases and BatchNorm parameters."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == 'kernel', params)


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The paper's optimizer; with `config.trainable_scopes`, for those variables only (the others
  frozen: `optax.set_to_zero`, no weight decay, out of the clipping's norm; `inception_jax.frozen`).
  Without it the state's tree is the plain chain's, as checkpoints of earlier runs hold it."""
  tx = _paper_optimizer(config, schedule)
  if not frozen.patterns(config.get('trainable_scopes')):
    return tx
  return optax.multi_transform({frozen.TRAINABLE: tx, frozen.FROZEN: optax.set_to_zero()},
                               frozen.labels(config.trainable_scopes))


def _paper_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  parts = []
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay, mask=kernel_mask))
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.rmsprop(schedule, decay=config.rmsprop_decay, eps=config.rmsprop_epsilon,
                             initial_scale=1.0, eps_in_sqrt=True,
                             momentum=config.rmsprop_momentum or None))
  return optax.chain(*parts)


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
  """TF's ExponentialMovingAverage with num_updates: min(decay, (1 + step) / (10 + step)).

  The ramp lets the average track the parameters early on, so short runs can evaluate with it too.
  """
  return jax.numpy.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay: float, step: jax.Array):
  """The moving average after update `step` (counted from 0), which gave `params`."""
  rate = ema_decay(decay, step)
  return jax.tree_util.tree_map(lambda e, p: rate * e + (1 - rate) * p, ema_params, params)
