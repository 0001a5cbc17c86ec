"""Where a run starts from: resuming a workdir, and pretrained variables (`init_from`)."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from inception_jax import checkpoint as ckpt, start, steps, train
from inception_jax.models import create, unstack_blocks

from train_utils import STEPS, assert_trees_equal, final_variables, losses, tiny_config


def initialised(network):
  """The network's variables at 16x16 (jitted: one compilation instead of one per operation)."""
  return jax.jit(lambda: steps.init_variables(network, (16, 16, 3), seed=1))()


def tiny_network(**options):
  return create('inception_resnet_v2', **{'num_classes': 10, 'depth_multiplier': 0.125,
                                          'repeats': (1, 1, 1), 'small_inputs': True, **options})


def test_merge_reinitialises_a_classifier_of_another_width(straight):
  network = tiny_network(num_classes=3, scan_blocks=True)
  fresh = initialised(network)
  loaded = final_variables(straight)
  merged, reinitialised = start.merge_pretrained(fresh, loaded, network)
  assert reinitialised == ['Logits']
  np.testing.assert_array_equal(merged['params']['Logits']['kernel'],
                                fresh['params']['Logits']['kernel'])
  np.testing.assert_array_equal(merged['params']['Mixed_5b']['Branch_0']['Conv2d_1x1']['kernel'],
                                loaded['params']['Mixed_5b']['Branch_0']['Conv2d_1x1']['kernel'])
  same, reinitialised = start.merge_pretrained(
      initialised(tiny_network(scan_blocks=True)), loaded,
      tiny_network(scan_blocks=True))
  assert reinitialised == []
  assert_trees_equal(same, loaded)

  wider = tiny_network(depth_multiplier=0.25)
  with pytest.raises(ValueError) as error:
    start.merge_pretrained(initialised(wider), loaded, wider)
  lines = str(error.value).splitlines()  # a handful of the problems, the weights first
  assert len(lines) == 7 and re.fullmatch(r'  \.\.\. and \d+ more', lines[-1])
  assert all(re.fullmatch(r'  shape mismatch: params/\S+ expects \(.*\), found \(.*\)', line)
             for line in lines[1:-1]), lines


def test_merge_converts_between_scanned_and_unrolled_blocks():
  scanned = tiny_network(repeats=(1, 2, 1), scan_blocks=True)
  unrolled = tiny_network(repeats=(1, 2, 1))
  source = initialised(scanned)
  assert 'block17_1+block17_2' in source['params']['Repeat_1']
  merged, _ = start.merge_pretrained(initialised(unrolled), source, unrolled)
  assert_trees_equal(merged, unstack_blocks(source))
  back, _ = start.merge_pretrained(initialised(scanned), merged, scanned)
  assert_trees_equal(back, source)


def test_merge_into_scanned_blocks_adds_an_aux_head_and_names_leftovers():
  source = tiny_network(repeats=(1, 2, 1))
  loaded = initialised(source)
  scanned_aux = tiny_network(repeats=(1, 2, 1), scan_blocks=True, aux_logits=True)
  fresh = initialised(scanned_aux)
  merged, _ = start.merge_pretrained(fresh, loaded, scanned_aux)
  assert_trees_equal(merged['params']['AuxLogits'], fresh['params']['AuxLogits'])
  assert_trees_equal(unstack_blocks(merged)['params']['Repeat_1'], loaded['params']['Repeat_1'])
  extra = {**loaded, 'params': {**loaded['params'], 'Extra': {'kernel': np.zeros(3)}}}
  with pytest.raises(ValueError, match='not used by the model: params/Extra/kernel'):
    start.merge_pretrained(fresh, extra, scanned_aux)


def test_init_from_starts_training_from_the_checkpoint(straight, tmp_path, capsys):
  config = tiny_config(num_train_steps=1, init_from=straight)
  config.ema_decay = 0.0
  with train.Trainer(config, str(tmp_path)) as trainer:
    step, state = trainer.start()
  assert step == 0
  assert_trees_equal(jax.device_get(state.params), final_variables(straight)['params'])
  count = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  assert (f'Starting from {straight} (inception_resnet_v2, trained on digits): {count:,} '
          'pretrained parameters loaded.') in capsys.readouterr().out


def test_init_from_says_what_starts_fresh(straight, tmp_path, capsys, caplog):
  config = tiny_config(num_train_steps=1, init_from=straight,
                       **{'dataset.name': 'synthetic', 'model.aux_logits': True})
  with train.Trainer(config, str(tmp_path)) as trainer:
    trainer.start()
  assert ('Logits re-initialised (1000 classes); AuxLogits new (the checkpoint has no aux '
          'head).') in capsys.readouterr().out
  assert 'Metadata file' not in caplog.text  # Orbax's warning about a workdir's state item


def test_init_from_names_the_options_a_converted_checkpoint_needs(tmp_path):
  converted = str(tmp_path / 'converted')
  network = create('inception_resnet_v2', num_classes=10, depth_multiplier=0.5)
  record = ckpt.ModelRecord.for_conversion(
      'inception_resnet_v2', {'bn_scale': True, 'num_classes': 1000, 'avg_pool_include_pad': True,
                              'aux_logits': True}, 'timm', 'model.safetensors')
  record.write(converted)
  with pytest.raises(ValueError, match=r'set --config.model.bn_scale=True '
                     r'--config.model.depth_multiplier=1.0 --config.model.avg_pool_include_pad=True'
                     r'\.$'):
    start.check_pretrained(converted, 'inception_resnet_v2', network)
  # What fine-tuning adapts to may differ: classes, aux head, block layout, the small-image stem.
  start.check_pretrained(converted, 'inception_resnet_v2', create(
      'inception_resnet_v2', num_classes=3, bn_scale=True, avg_pool_include_pad=True,
      small_inputs=True, scan_blocks=True))
  ckpt.ModelRecord('inception_v4', {}).write(converted)
  with pytest.raises(ValueError, match='holds inception_v4 weights, but config.model.name is '
                     'inception_resnet_v2'):
    start.check_pretrained(converted, 'inception_resnet_v2', network)


def test_resume_with_another_network_names_the_flags_and_keeps_the_checkpoints(straight,
                                                                               tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(straight, workdir)  # trained with the demo's scan_blocks=True
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(ValueError, match=r"resume with '--config.model.repeats=\(1, 1, 1\)' "
                                       r'--config.model.scan_blocks=True, or train in a new'):
    train.train_and_evaluate(tiny_config(num_train_steps=STEPS + 2, **{
        'model.scan_blocks': False, 'model.repeats': (1, 2, 1)}), workdir)
  with pytest.raises(ValueError, match=r"checkpoints of a 10-class network, but this config's "
                     r'dataset \(config.dataset.name=synthetic\) gives 1000 classes'):
    train.train_and_evaluate(tiny_config(num_train_steps=STEPS + 2,
                                         **{'dataset.name': 'synthetic'}), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_corrupt'))

  result = train.train_and_evaluate(tiny_config(num_train_steps=STEPS + 2), workdir)
  assert result['eval_examples'] == 297 and 0 <= result['eval_top1'] <= 1
  logged = losses(workdir)
  assert logged[:-1] == losses(straight) and logged[-1][0] == STEPS + 2
  assert str(STEPS + 2) in os.listdir(os.path.join(workdir, 'checkpoints'))


def write_timm_like(path):
  """A checkpoint as `convert --source=timm` writes one (BatchNorm learns gamma: bn_scale=True,
  1,000 classes, blocks unrolled), of the tiny config's network."""
  options = {'num_classes': 1000, 'aux_logits': False, 'bn_scale': True, 'depth_multiplier': 0.125,
             'repeats': (1, 1, 1)}
  variables = jax.device_get(initialised(tiny_network(**options)))
  ckpt.save_variables(path, variables, ckpt.ModelRecord.for_conversion(
      'inception_resnet_v2', options, 'timm', 'model.safetensors'))


def test_recorded_options_fill_what_the_config_leaves_unset(tmp_path):
  converted = str(tmp_path / 'timm')
  ckpt.ModelRecord.for_conversion('inception_resnet_v2', {
      'num_classes': 1000, 'bn_scale': True, 'avg_pool_include_pad': False, 'bn_epsilon': 1e-5,
      'repeats': [1, 1, 1]}, 'timm', 'model.safetensors').write(converted)
  config = tiny_config(init_from=converted, **{'model.repeats': None})
  taken, note = start.recorded_options(config, str(tmp_path / 'work'))
  assert (taken.model.bn_scale, taken.model.avg_pool_include_pad) == (True, False)
  assert taken.model.repeats == (1, 1, 1) and taken.model.bn_epsilon == 1e-5
  assert note == 'bn_epsilon=1e-05, bn_scale=True, repeats=(1, 1, 1) taken from its record'
  assert config.model.bn_scale is None  # the caller's config is left as it was
  # What the config sets stays (checked against the record later); unset and unrecorded: None,
  # which builds the network's default (bn_scale=False: fresh runs as before).
  explicit = tiny_config(init_from=converted, **{'model.bn_scale': False})
  assert start.recorded_options(explicit, str(tmp_path / 'work'))[0].model.bn_scale is False
  fresh = tiny_config()
  assert start.recorded_options(fresh, str(tmp_path / 'work')) == (fresh, '')
  assert steps.options_from_config(fresh, 10)['bn_scale'] is False


def test_changed_options_name_what_resuming_changes_but_the_structure():
  old = ckpt.ModelRecord('inception_resnet_v2', {'dropout_keep': 0.8, 'num_classes': 10})
  new = ckpt.ModelRecord('inception_resnet_v2', {'dropout_keep': 0.5, 'residual_scale': 0.2,
                                                 'num_classes': 3, 'bn_scale': True})
  assert start.changed_options(old, new, tiny_network()) == (
      'dropout_keep 0.8 -> 0.5, residual_scale (0.17, 0.1, 0.2) -> 0.2')
  assert start.changed_options(old, old, tiny_network()) == ''
  assert start.changed_options(None, new, tiny_network()) == ''


def test_fine_tuning_timm_weights_takes_bn_scale_and_resuming_names_changes(tmp_path, capsys):
  converted, workdir = str(tmp_path / 'timm'), str(tmp_path / 'work')
  write_timm_like(converted)
  settings = dict(init_from=converted, num_train_steps=2, checkpoint_every_steps=2,
                  eval_every_steps=2)
  with pytest.raises(ValueError, match=r'set --config.model.bn_scale=True\.$'):
    train.train_and_evaluate(tiny_config(**settings, **{'model.bn_scale': False}), workdir)
  train.train_and_evaluate(tiny_config(**settings), workdir)  # no --config.model.bn_scale=True
  out = capsys.readouterr().out
  assert re.search(rf'Starting from {re.escape(converted)} \(inception_resnet_v2, timm:\S+\): '
                   r'[\d,]+ pretrained parameters loaded; bn_scale=True taken from its record; '
                   r'Logits re-initialised \(10 classes\)\.', out), out
  assert ckpt.ModelRecord.read(workdir).options['bn_scale'] is True
  assert 'scale' in final_variables(workdir)['params']['Conv2d_1a_3x3']['BatchNorm']

  # Resuming, the run keeps its own bn_scale; a changed numeric option is named, old -> new.
  train.train_and_evaluate(tiny_config(**{**settings, 'num_train_steps': 3},
                                       **{'model.dropout_keep': 0.5}), workdir)
  assert (f'Resuming from {workdir}/checkpoints/2; model options changed since its record: '
          'dropout_keep 0.8 -> 0.5.') in capsys.readouterr().out
  with pytest.raises(ValueError, match=r'resume with --config.model.bn_scale=True, or train in'):
    train.train_and_evaluate(tiny_config(**{**settings, 'num_train_steps': 4},
                                         **{'model.bn_scale': False}), workdir)
