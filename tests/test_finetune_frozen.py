"""Fine-tuning with frozen parts (`config.trainable_scopes`, inception_jax/frozen.py): which
variables train, that the others stay bit for bit as they were (EMA and BatchNorm statistics too),
that the trainable ones get the update of a masked full fine-tune, that no gradient is computed
for the frozen backbone, and that runs checkpoint and resume."""

import functools
import os
import re
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_jax import config_checks, frozen, optim, steps, train
from inception_jax.errors import ConfigError
from inception_jax.models import create

import train_utils as tu

PROBE = 'Logits'
# The top of the network: the last grid's reduction and final block, its final conv, the classifier.
TOP = 'Mixed_7*,Block8,Conv2d_7b_1x1,Logits'


def network(config):
  return create(config.model.name, **steps.options_from_config(config, num_classes=10))


def param_shapes(config):
  model = network(config)
  size = config.dataset.image_size
  return jax.eval_shape(lambda: steps.init_variables(model, (size, size, 3), 0))['params']


def trained_scopes(mask):
  """'/'-joined paths of the True leaves of a mask, to the depth of their top-level scope."""
  flat = flax.traverse_util.flatten_dict(mask)
  return sorted({path[0] for path, value in flat.items() if value})


@pytest.mark.quick
def test_patterns_match_whole_prefixes_of_the_variable_paths():
  params = param_shapes(tu.tiny_config())
  assert trained_scopes(frozen.trainable_mask('Logits', params)) == ['Logits']
  assert trained_scopes(frozen.trainable_mask(' Mixed_7*, Logits ', params)) == [
      'Logits', 'Mixed_7a']
  # A deeper prefix: one tower of one block.
  mask = flax.traverse_util.flatten_dict(frozen.trainable_mask('Mixed_6a/Branch_1', params))
  assert {p[:2] for p, v in mask.items() if v} == {('Mixed_6a', 'Branch_1')}
  # Whole components: `Conv2d_1a` is no prefix of Conv2d_1a_3x3's path, but `Conv2d_1a*` is.
  with pytest.raises(ConfigError, match="'Conv2d_1a' matches no variable"):
    frozen.trainable_mask('Conv2d_1a', params)
  assert trained_scopes(frozen.trainable_mask('Conv2d_1a*', params)) == ['Conv2d_1a_3x3']
  assert frozen.patterns(None) == frozen.patterns('') == ()


@pytest.mark.quick
def test_scanned_runs_train_whole_or_stop_the_job():
  """Patterns are matched against the unrolled (TF-slim) names: both layouts train the same
  variables, and a pattern that would freeze part of a stacked run is an error."""
  unrolled = param_shapes(tu.tiny_config(**{'model.repeats': (2, 2, 3),
                                            'model.scan_blocks': False}))
  scanned = param_shapes(tu.tiny_config(**{'model.repeats': (2, 2, 3)}))
  assert 'block8_1+block8_2' in scanned['Repeat_2']
  for scopes in (TOP, 'Repeat_2/block8_*', '*block8_*/Branch_1'):
    assert (trained_scopes(frozen.trainable_mask(scopes, unrolled))
            == trained_scopes(frozen.trainable_mask(scopes, scanned)))
  assert flax.traverse_util.flatten_dict(frozen.trainable_mask('Repeat_2/block8_2', unrolled))
  with pytest.raises(ConfigError, match=r"'Repeat_2/block8_2' matches some blocks of the scanned "
                                        r'run Repeat_2/block8_1\+block8_2/.* but not all.*'
                                        'scan_blocks=False'):
    frozen.trainable_mask('Repeat_2/block8_2', scanned)


@pytest.mark.quick
def test_a_pattern_that_matches_nothing_fails_before_compute_naming_the_scopes():
  with pytest.raises(ConfigError) as raised:
    config_checks.validate(tu.tiny_config(trainable_scopes='Logits,Mixed_9*'))
  message = str(raised.value)
  assert "config.trainable_scopes='Logits,Mixed_9*': 'Mixed_9*' matches no variable" in message
  assert 'top-level scopes are Block8, Conv2d_1a_3x3, ' in message and 'Logits' in message
  # The aux head's pattern applies where the network has one (configs/finetune.py:irv2_probe).
  config_checks.validate(tu.tiny_config(trainable_scopes='Logits,AuxLogits'))


def start(config, build):
  """(model, tx, schedule, initial state) for `config`; `build` makes the state from a function
  (`jax.eval_shape` for its shapes alone)."""
  model = network(config)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=100)
  tx = optim.make_optimizer(config, schedule)
  size = config.dataset.image_size
  state = build(lambda: steps.create_train_state(steps.init_variables(model, (size, size, 3), 0),
                                                 tx))
  return model, tx, schedule, state


def setup(config, seed=0):
  """(model, tx, schedule, initial state, batches) for `config` on random images."""
  model, tx, schedule, state = start(config, lambda init: jax.jit(init)())
  size = config.dataset.image_size
  rng = np.random.default_rng(seed)
  batches = [{'image': rng.integers(0, 256, (16, size, size, 3), np.uint8),
              'label': rng.integers(0, 10, (16,), np.int32)} for _ in range(3)]
  return model, tx, schedule, state, batches


def jitted_step(config, model, tx, schedule):
  return jax.jit(functools.partial(steps.train_step, model=model, tx=tx, schedule=schedule,
                                   config=config))


def split_state(state, mask):
  """(trainable, frozen) flat dicts of params, EMA and batch_stats (BatchNorm statistics count
  as frozen when their BatchNorm's bias is)."""
  bn = flax.traverse_util.flatten_dict(state.batch_stats)
  flat_mask = flax.traverse_util.flatten_dict(mask)
  bn_trains = {k: flat_mask[(*k[:-1], 'bias')] for k in bn}
  out = ({}, {})
  for name, tree in (('params', state.params), ('ema', state.ema_params)):
    for k, v in flax.traverse_util.flatten_dict(tree).items():
      out[0 if flat_mask[k] else 1][(name, *k)] = np.asarray(v)
  for k, v in bn.items():
    out[0 if bn_trains[k] else 1][('batch_stats', *k)] = np.asarray(v)
  return out


@pytest.mark.parametrize('scopes', [PROBE, TOP])
def test_frozen_variables_params_statistics_and_ema_stay_bit_identical(scopes):
  config = tu.tiny_config(trainable_scopes=scopes)
  model, tx, schedule, state, batches = setup(config)
  mask = frozen.trainable_mask(scopes, state.params)
  trainable_before, frozen_before = split_state(state, mask)
  step = jitted_step(config, model, tx, schedule)
  for batch in batches:
    state = step(state, batch)
  trainable_after, frozen_after = split_state(state, mask)
  assert frozen_after.keys() == frozen_before.keys()
  for key, value in frozen_before.items():
    assert value.tobytes() == frozen_after[key].tobytes(), key
  moved = [k for k, v in trainable_before.items() if v.tobytes() != trainable_after[k].tobytes()]
  assert {k[:2] for k in moved} == {k[:2] for k in trainable_before}  # every trainable scope moved
  assert int(state.step) == 3 and np.isfinite(float(state.metric_sums['loss']))


def test_frozen_bn_train_updates_the_frozen_statistics_only():
  """`frozen_bn_train=True`: frozen BatchNorms normalise by batch statistics and update their
  moving averages; frozen parameters and their EMA still stay as they were."""
  config = tu.tiny_config(trainable_scopes=PROBE, frozen_bn_train=True)
  model, tx, schedule, state, batches = setup(config)
  mask = frozen.trainable_mask(PROBE, state.params)
  _, before = split_state(state, mask)
  _, after = split_state(jitted_step(config, model, tx, schedule)(state, batches[0]), mask)
  changed = {k[0] for k, v in before.items() if v.tobytes() != after[k].tobytes()}
  assert changed == {'batch_stats'}


def reference_steps(config, model, state, batches, mask, train_mode):
  """An independent masked full fine-tune: gradients of every parameter (BatchNorm in training
  mode everywhere, or with `train_mode` False in inference mode everywhere), then the paper's
  optimizer under `optax.masked`, which updates the `mask`ed ones only and leaves the others'
  (raw gradient) updates unapplied."""
  tx = optax.masked(optim.make_optimizer(tu.tiny_config(), optim.learning_rate_schedule(
      config, steps_per_epoch=100)), mask)
  params, batch_stats, opt_state = state.params, state.batch_stats, tx.init(state.params)

  @jax.jit
  def gradients(p, batch_stats, batch, i):
    def loss_fn(p):
      images = steps.normalize(batch['image'])
      rngs = {'dropout': jax.random.fold_in(jax.random.key(config.seed), i)}
      logits, new = model.apply({'params': p, 'batch_stats': batch_stats}, images,
                                train=train_mode, mutable=['batch_stats', 'diagnostics'],
                                rngs=rngs)
      loss = steps.cross_entropy(logits, batch['label'], 10, config.label_smoothing).mean()
      return loss, new['batch_stats']
    return jax.grad(loss_fn, has_aux=True)(p)

  for i, batch in enumerate(batches):
    grads, new_stats = gradients(params, batch_stats, batch, i)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree_util.tree_map(lambda p, u, m: p + u if m else p, params, updates, mask)
    batch_stats = new_stats if train_mode else batch_stats
  return params


@pytest.mark.parametrize('scopes,frozen_bn_train', [(TOP, True), (PROBE, False)])
def test_trainable_variables_get_the_update_of_a_masked_full_fine_tune(scopes, frozen_bn_train):
  """Equal to float32 rounding, not bit for bit: the reference differentiates every parameter
  and XLA fuses and orders its sums otherwise. With frozen BatchNorms in inference mode the
  reference runs the whole network so (its only trainable layer is the classifier) and without
  dropout."""
  config = tu.tiny_config(trainable_scopes=scopes, frozen_bn_train=frozen_bn_train,
                          **{'model.dropout_keep': 1.0 if not frozen_bn_train else 0.8})
  model, tx, schedule, state, batches = setup(config)
  mask = frozen.trainable_mask(scopes, state.params)
  expected = reference_steps(config, model, state, batches, mask, train_mode=frozen_bn_train)
  step = jitted_step(config, model, tx, schedule)
  for batch in batches:
    state = step(state, batch)
  flat_mask = flax.traverse_util.flatten_dict(mask)
  got = flax.traverse_util.flatten_dict(state.params)
  worst = 0.0
  for key, want in flax.traverse_util.flatten_dict(expected).items():
    if flat_mask[key]:
      np.testing.assert_allclose(got[key], want, rtol=2e-5, atol=1e-6, err_msg=str(key))
      worst = max(worst, float(np.max(np.abs(np.asarray(got[key]) - np.asarray(want)))))
  print(f'{scopes}: largest difference from the masked full fine-tune {worst:.3g}')


def conv_count(config, batch_size=16):
  model, tx, schedule, state = start(config, jax.eval_shape)
  size = config.dataset.image_size
  batch = {'image': jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  text = jitted_step(config, model, tx, schedule).lower(state, batch).as_text()
  return text.count('stablehlo.convolution')


@pytest.mark.quick
def test_a_probe_step_computes_no_gradient_of_the_frozen_backbone():
  """Counted in the lowered program's text, before XLA's optimisations (a function the program
  calls more than once, such as a custom gradient, counts once): a full step holds its convs
  forward and backward, a linear probe's only the forward ones (one per conv kernel), and
  training the top adds the backward of the top's convs alone."""
  full = conv_count(tu.tiny_config())
  probe = conv_count(tu.tiny_config(trainable_scopes=PROBE))
  top = conv_count(tu.tiny_config(trainable_scopes=TOP))
  forward = len([k for k in flax.traverse_util.flatten_dict(param_shapes(tu.tiny_config()))
                 if k[-1] == 'kernel' and k[0] != 'Logits'])
  assert probe == forward, (probe, forward)  # tiny: 41 (full: 82, top: 53)
  assert full >= 2 * forward and probe < top < full, (probe, top, full)


@pytest.mark.quick
def test_the_default_optimizer_state_is_the_plain_chain():
  """Without trainable_scopes the optimizer is the chain it was, so old checkpoints resume."""
  params = param_shapes(tu.tiny_config())
  config = tu.tiny_config()
  schedule = optim.learning_rate_schedule(config, 100)
  plain = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=optim.kernel_mask),
                      optax.clip_by_global_norm(config.grad_clip_norm),
                      optax.rmsprop(schedule, decay=0.9, eps=1.0, initial_scale=1.0,
                                    eps_in_sqrt=True, momentum=0.9))
  assert (jax.tree_util.tree_structure(jax.eval_shape(
      optim.make_optimizer(config, schedule).init, params))
          == jax.tree_util.tree_structure(jax.eval_shape(plain.init, params)))
  probe = tu.tiny_config(trainable_scopes=PROBE)
  assert isinstance(jax.eval_shape(optim.make_optimizer(probe, schedule).init, params),
                    optax.MultiTransformState)


def test_a_probe_from_a_trained_workdir_resumes_and_keeps_its_scopes(straight, tmp_path):
  """init_from a trained workdir: the backbone stays as trained, bit for bit; a checkpoint of the
  probe resumes to the same end as a straight run; another trainable_scopes stops the resume
  with the checkpoints kept."""
  overrides = dict(init_from=straight, trainable_scopes=PROBE, num_train_steps=8)
  whole = str(tmp_path / 'whole')
  train.train_and_evaluate(tu.tiny_config(**overrides), whole)
  start, end = tu.final_variables(straight), tu.final_variables(whole)
  end_ema = jax.tree_util.tree_map(np.asarray, tu.ckpt.load_variables(whole, ema=True))
  for tree in ('params', 'batch_stats'):
    flat_start = flax.traverse_util.flatten_dict(start[tree])
    flat_end = flax.traverse_util.flatten_dict(end[tree])
    for key, value in flat_start.items():
      if key[0] != 'Logits':
        assert value.tobytes() == flat_end[key].tobytes(), (tree, key)
  # The EMA of a frozen variable is the variable: started from init_from, it equals the params.
  for key, value in flax.traverse_util.flatten_dict(end_ema['params']).items():
    if key[0] != 'Logits':
      assert value.tobytes() == flax.traverse_util.flatten_dict(start['params'])[key].tobytes()
  assert not np.array_equal(start['params']['Logits']['kernel'], end['params']['Logits']['kernel'])

  resumed = str(tmp_path / 'resumed')
  train.train_and_evaluate(tu.tiny_config(**dict(overrides, num_train_steps=4)), resumed)
  train.train_and_evaluate(tu.tiny_config(**overrides), resumed)
  tu.assert_trees_equal(tu.final_variables(resumed), end)
  assert tu.losses(resumed) == tu.losses(whole)

  changed = str(tmp_path / 'changed')
  shutil.copytree(resumed, changed)
  before = sorted(os.listdir(os.path.join(changed, 'checkpoints')))
  with pytest.raises(ConfigError, match=re.escape(
      'changed holds checkpoints of a run with --config.trainable_scopes=Logits, but this config '
      f'has --config.trainable_scopes={TOP}; resume with the first, or train the other scopes '
      'in a new workdir with --config.init_from=')):
    train.train_and_evaluate(tu.tiny_config(**dict(overrides, trainable_scopes=TOP,
                                                   num_train_steps=12)), changed)
  assert sorted(os.listdir(os.path.join(changed, 'checkpoints'))) == before
