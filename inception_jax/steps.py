"""The pure, jittable pieces of training: the train state, the train and eval steps.

Nothing here reads files or imports TensorFlow, so benchmarks and other programs can run the exact
step the training job runs (`inception_jax.train` adds the data, checkpoints and the loop).
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_jax import frozen, optim
from inception_jax.errors import ConfigError
from inception_jax.models import diagnostics, model_class


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  # The first step whose loss or gradients were not finite, -1 while all were.
  nonfinite_step: jax.Array
  # Training metrics summed since the last log line; checkpointed (but for the diagnostics: see
  # DIAGNOSTICS_COUNT) so a resumed run logs the same.
  metric_sums: dict[str, jax.Array]

  def reset_metrics(self) -> 'TrainState':
    return self.replace(metric_sums=jax.tree_util.tree_map(jnp.zeros_like, self.metric_sums))


# What a train step adds up between two log lines ('count' steps), to be logged as means; except
# LATEST, the value at the last step: the learning rate logged at step s is the one of update s.
METRICS = ('loss', 'top1', 'learning_rate', 'grad_norm', 'count')
LATEST = ('learning_rate',)
# With diagnostics on, the step also adds up the model's `diagnostic_metrics` and counts them here.
# Their sums are left out of checkpoints (a checkpoint's layout does not depend on them; old
# checkpoints resume): after a resume, the first log line averages them over the steps since.
DIAGNOSTICS_COUNT = 'diagnostics_count'


def diagnostics_for(model: nn.Module, config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The diagnostics a training step of `model` records: `config.diagnostics` True: the model's
  own; False: none; None (default): the Inception-ResNets' (the networks the paper saw die)."""
  wanted = config.get('diagnostics')
  if wanted is None:
    wanted = hasattr(model, 'scales')
  return tuple(model.diagnostic_metrics) if wanted else ()


def checkpointed(state: TrainState) -> TrainState:
  """`state` as checkpoints hold it: without the diagnostics' sums."""
  return state.replace(metric_sums={k: state.metric_sums[k] for k in METRICS})


def with_diagnostics(state: TrainState, names: tuple[str, ...]) -> TrainState:
  """A checkpointed state with zero sums for diagnostics `names` (none: `state` itself)."""
  if not names:
    return state
  zeros = {k: jnp.zeros((), jnp.float32) for k in (*names, DIAGNOSTICS_COUNT)}
  return state.replace(metric_sums={**state.metric_sums, **zeros})


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [0, 255] -> [-1, 1], on the device."""
  return (images.astype(dtype) / 127.5 - 1.0).astype(dtype)


# Model options whose config fields default to None: a run takes them from the record of the
# checkpoint it starts from (`start.recorded_options`, e.g. bn_scale=True of timm's weights), else
# the network's default.
FROM_RECORD = ('bn_scale', 'avg_pool_include_pad')


def options_from_config(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  """The `create(config.model.name, ...)` options that `config.model` asks for."""
  options = {k: v for k, v in config.model.items() if k != 'name' and v is not None}
  for field in FROM_RECORD:  # unset where no record gave them (start.py): the network's default
    if field in config.model and field not in options:
      options[field] = getattr(model_class(config.model.name), field)
  for field in ('residual_scale', 'learn_residual_scale'):
    if field in options and not hasattr(model_class(config.model.name), 'scales'):
      raise ConfigError(f'config.model.{field} applies to Inception-ResNet models only, not '
                        f'{config.model.name}; unset it.')
  return dict(options, num_classes=num_classes)


def cross_entropy(logits, labels, num_classes, smoothing):
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch, *, model: nn.Module, tx, schedule, config):
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
  images = normalize(batch['image'], model.dtype)
  labels = batch['label']
  # Examples a source could not read (mask 0) stay in the batch but out of the loss and metrics.
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  mean = lambda x: jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)

  diagnosed = DIAGNOSTICS_COUNT in state.metric_sums
  mutable = ['batch_stats', diagnostics.COLLECTION] if diagnosed else ['batch_stats']

  scopes = config.get('trainable_scopes')
  trains = frozen.trainable_mask(scopes, state.params) if frozen.patterns(scopes) else None
  frozen_bn = trains is not None and not config.get('frozen_bn_train')

  def loss_fn(params):
    with frozen.frozen_batch_norm(trains) if frozen_bn else contextlib.nullcontext():
      outputs, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                      images, train=True, mutable=mutable, rngs={'dropout': rng})
    logits, aux = outputs if model.aux_logits else (outputs, None)
    loss = mean(cross_entropy(logits, labels, model.num_classes, config.label_smoothing))
    total = loss
    if aux is not None:
      total += config.aux_loss_weight * mean(cross_entropy(
          aux, labels, model.num_classes, config.label_smoothing))
    return total, (loss, logits, new_vars['batch_stats'], new_vars.get(diagnostics.COLLECTION))

  if trains is None:
    (total, (loss, logits, batch_stats, recorded)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optim.ema_update(state.ema_params, params, config.ema_decay, state.step) \
        if config.ema_decay else params
    grad_norm = optax.tree.norm(grads)
  else:
    (total, (loss, logits, batch_stats, recorded)), params, opt_state, ema, grad_norm = (
        _frozen_update(state, loss_fn, trains, tx, config))
  finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                             state.nonfinite_step)
  metrics = {'loss': loss, 'top1': mean(jnp.argmax(logits, -1) == labels),
             'learning_rate': schedule(state.step), 'grad_norm': grad_norm, 'count': 1.0}
  if diagnosed:
    metrics.update(diagnostics.summarize(recorded), **{DIAGNOSTICS_COUNT: 1.0})
  sums = {k: metrics[k] if k in LATEST else v + metrics[k] for k, v in state.metric_sums.items()}
  return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                    opt_state=opt_state, ema_params=ema, nonfinite_step=nonfinite_step,
                    metric_sums=sums)


def _frozen_update(state: TrainState, loss_fn, mask, tx, config):
  """The update of the variables that `mask` (`frozen.trainable_mask`) leaves trainable; the
  others pass through untouched, EMA included. Only the trainable ones are differentiated, the
  frozen ones enter as constants (`stop_gradient`): XLA computes no gradient for them, nor the
  backward pass below the lowest trainable layer. Returns (loss_fn's value, params, opt_state,
  ema_params, grad_norm)."""
  trainable, fixed = frozen.split(state.params, mask)
  fixed = jax.lax.stop_gradient(fixed)
  value, grads = jax.value_and_grad(lambda t: loss_fn(frozen.merge(t, fixed)), has_aux=True)(
      trainable)
  zeros = {k: jnp.zeros_like(v) for k, v in fixed.items()}  # set_to_zero's input: unused
  updates, opt_state = tx.update(frozen.merge(grads, zeros), state.opt_state, state.params)
  new, _ = frozen.split(optax.apply_updates(state.params, updates), mask)
  params = frozen.merge(new, fixed)  # the frozen arrays themselves, not p + 0
  if config.ema_decay:
    old_ema, kept = frozen.split(state.ema_params, mask)
    ema = frozen.merge(optim.ema_update(old_ema, new, config.ema_decay, state.step), kept)
  else:
    ema = params
  return value, params, opt_state, ema, optax.tree.norm(grads)


def eval_step(params, batch_stats, batch, *, model: nn.Module):
  outputs = model.apply({'params': params, 'batch_stats': batch_stats},
                        normalize(batch['image'], model.dtype), train=False)
  logits = outputs[0] if model.aux_logits else outputs
  labels, mask = batch['label'], batch['mask']
  top1, top5 = hits(logits, labels, mask)
  return {
      'loss': jnp.sum(cross_entropy(logits, labels, model.num_classes, 0.0) * mask),
      'top1': top1,
      'top5': top5,
      'count': jnp.sum(mask),
  }


def hits(scores: jax.Array, labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Masked counts of the examples whose label is the top-scoring class, and among the top 5
  (`scores`: logits or probabilities, [batch, classes])."""
  top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))[1]
  return (jnp.sum((jnp.argmax(scores, -1) == labels) * mask),
          jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask))


def init_variables(model: nn.Module, image_shape, seed: int):
  return model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), model.dtype), train=False)


def create_train_state(variables, tx: optax.GradientTransformation,
                       diagnostic_metrics: tuple[str, ...] = ()) -> TrainState:
  """A fresh state; its steps record the `diagnostic_metrics` named (see `diagnostics_for`)."""
  params = variables['params']
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                     ema_params=params, nonfinite_step=jnp.full((), -1, jnp.int32),
                     metric_sums={k: jnp.zeros((), jnp.float32) for k in METRICS})
  return with_diagnostics(state, diagnostic_metrics)
