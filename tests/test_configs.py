"""Every config loads, names a real model and dataset, and documents the command that runs it."""

import importlib
import os
import pkgutil

from flax.traverse_util import flatten_dict
import jax
import jax.numpy as jnp
import pytest

import configs
from configs import default, demo, imagenet
from inception_jax.data import known_datasets
from inception_jax.models import create, list_models
from inception_jax.optim import scaled_learning_rate as optim_learning_rate
from inception_jax.steps import options_from_config

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"

# Every config file that runs (not default.py, the recipe they start from), found on disk so that
# a new one is checked too.
RUNNABLE = [(m.name, None) for m in pkgutil.iter_modules(configs.__path__) if m.name != 'default']

IMAGENET_MODELS = [('iv3', 'inception_v3'), ('iv4', 'inception_v4'),
                   ('irv1', 'inception_resnet_v1'), ('irv2', 'inception_resnet_v2'),
                   ('irv2_paper', 'inception_resnet_v2_paper')]


def load(name, arg):
  module = importlib.import_module(f'configs.{name}')
  return module, module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize('name,arg', RUNNABLE + [('demo', 'tiny')])
def test_config_is_complete_and_documented(name, arg):
  module, config = load(name, arg)
  assert config.model.name in list_models()
  assert config.dataset.name.split(':')[0] in known_datasets()
  assert f'--config=configs/{name}.py' + (f':{arg}' if arg else '') in module.__doc__
  create(config.model.name, **options_from_config(config, num_classes=1000))


def test_every_model_argument_has_an_alias():
  assert {arg for arg, _ in IMAGENET_MODELS} == set(default.MODELS)
  assert set(default.MODELS) <= {name for name, _ in RUNNABLE}


@pytest.mark.parametrize('arg,model', IMAGENET_MODELS)
def test_imagenet_config_takes_the_model_as_argument(arg, model):
  config = imagenet.get_config(arg)
  assert config.model.name == model and not config.model.small_inputs
  assert config.dataset.name == 'imagenet2012' and config.dataset.image_size == 299
  alias = importlib.import_module(f'configs.{arg}')
  assert alias.get_config() == config
  paper = default.MODELS[arg]
  assert f'ImageNet val: {paper.top1_error} / {paper.top5_error} %' in alias.__doc__


def test_imagenet_config_defaults_to_inception_resnet_v2():
  assert imagenet.get_config().model.name == 'inception_resnet_v2'


@pytest.mark.parametrize('arg,model', [('iv3', 'inception_v3'), ('irv2', 'inception_resnet_v2'),
                                       ('irv2_paper', 'inception_resnet_v2_paper')])
def test_cifar10_config_takes_the_model_as_argument(arg, model):
  from configs import cifar10
  config = cifar10.get_config(arg)
  assert config.model.name == model and config.model.small_inputs
  assert config.dataset.name == 'cifar10' and config.dataset.image_size == 32


@pytest.mark.parametrize('name,valid,example', [
    ('imagenet', 'iv3, iv4, irv1, irv2, irv2_paper', 'iv3'),
    ('cifar10', 'iv3, iv4, irv1, irv2, irv2_paper', 'iv3'),
    ('demo', 'tiny', 'tiny'),
    ('residual_scaling', '1.0, 0.3, 0.1, learned', '1.0'),
])
def test_an_unknown_argument_names_the_valid_ones(name, valid, example):
  module = importlib.import_module(f'configs.{name}')
  with pytest.raises(ValueError) as error:
    module.get_config('resnet50')
  assert str(error.value) == (f"configs/{name}.py has no argument 'resnet50'; its arguments are "
                              f'{valid}, e.g. --config=configs/{name}.py:{example}.')


def test_tiny_demo_is_the_demo_shrunk_for_tests():
  full = flatten_dict(demo.get_config().to_dict(), sep='.')
  tiny = flatten_dict(demo.get_config('tiny').to_dict(), sep='.')
  assert {key: value for key, value in tiny.items() if full[key] != value} == {
      'model.depth_multiplier': 0.125, 'model.repeats': (1, 1, 1), 'batch_size': 16,
      'eval_batch_size': 64, 'num_train_steps': 8, 'log_every_steps': 2,
      'checkpoint_every_steps': 4, 'eval_every_steps': 8}
  assert tiny['dataset.image_size'] == 16 and tiny['dataset.name'] == 'digits'


@pytest.mark.parametrize('arg,model', IMAGENET_MODELS)
def test_finetune_recipe_needs_init_from_and_scales_to_the_dataset(arg, model):
  from configs import finetune
  from inception_jax import config_checks
  from inception_jax.models import model_class
  config = finetune.get_config(arg)
  assert config.model.name == model
  assert config.dataset.image_size == model_class(model).default_size
  with pytest.raises(ValueError, match='This config needs --config.init_from=DIR'):
    config_checks.validate(config)
  config.init_from = '/path/to/weights'
  config_checks.validate(config)
  assert config_checks.intervals(config, steps_per_epoch=3) == {'log': 1, 'eval': 3,
                                                                'checkpoint': 3}
  assert config_checks.intervals(config, steps_per_epoch=500) == {'log': 50, 'eval': 500,
                                                                  'checkpoint': 500}
  config.eval_every_steps = 7  # steps, where set, win
  assert config_checks.intervals(config, steps_per_epoch=500)['eval'] == 7


@pytest.mark.quick
@pytest.mark.parametrize('arg', list(default.MODELS))
def test_finetune_probe_trains_the_classifiers_of_the_same_recipe(arg):
  from configs import finetune
  full = flatten_dict(finetune.get_config(arg).to_dict(), sep='.')
  probe = flatten_dict(finetune.get_config(arg + '_probe').to_dict(), sep='.')
  assert {key: value for key, value in probe.items() if full[key] != value} == {
      'trainable_scopes': 'Logits,AuxLogits', 'learning_rate': 0.01, 'warmup_epochs': 0.0}
  assert full['trainable_scopes'] is None


def test_finetune_probe_scopes_fit_the_network():
  from configs import finetune
  from inception_jax import config_checks
  config = finetune.get_config('irv2_probe')
  config.init_from = '/path/to/weights'
  config_checks.validate(config)  # AuxLogits matches nothing without the aux head: allowed
  config.model.aux_logits = True
  config_checks.validate(config)


def test_recipes_count_intervals_in_steps():
  from inception_jax import config_checks
  assert config_checks.intervals(default.get_config(), steps_per_epoch=5004) == {
      'log': 100, 'eval': 5000, 'checkpoint': 2000}


@pytest.mark.parametrize('arg,scale,learned', [('1.0', 1.0, None), ('0.1', 0.1, None),
                                               ('0.25', 0.25, None), ('learned', 1.0, True)])
def test_residual_scaling_study_meets_the_papers_condition(arg, scale, learned):
  from configs import residual_scaling
  config = residual_scaling.get_config(arg)
  assert (config.model.residual_scale, config.model.learn_residual_scale) == (scale, learned)
  model = create(config.model.name, **options_from_config(config, num_classes=10))
  assert model.scales == (scale,) * 3
  # More than 1000 filters in the residual stages (the paper's condition), at full width.
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))['params']
  widths = {name: shapes[stage][block]['Conv2d_1x1']['kernel'].shape[-1]
            for name, stage in (('17x17', 'Repeat_1'), ('8x8', 'Repeat_2'))
            for block in shapes[stage]}
  assert widths == {'17x17': 1152, '8x8': 2144}
  assert config.rmsprop_epsilon == 1.0 and config.lr_decay_rate == 0.94
  assert optim_learning_rate(config) == 0.045


@pytest.mark.parametrize('name,arg', RUNNABLE + [('residual_scaling', 'learned')])
def test_every_interval_takes_a_command_line_value(name, arg, tmp_path):
  # Through absl's config flag, as `python -m inception_jax.main` reads it: a field set to a bare
  # None would have lost its type and refuse the override.
  from absl import flags

  from inception_jax import config_flag
  path = f'configs/{name}.py' + (f':{arg}' if arg else '')
  events = ('log', 'eval', 'checkpoint')
  argv = ['prog', f'--config={path}',
          *(f'--config.{event}_every_steps={i + 2}' for i, event in enumerate(events)),
          *(f'--config.{event}_every_epochs=0.5' for event in events)]
  holder = flags.FlagValues()
  config_flag.define('config', flag_values=holder, sys_argv=argv)
  holder(argv)
  config = holder.config
  assert [config[f'{event}_every_steps'] for event in events] == [2, 3, 4]
  assert [config[f'{event}_every_epochs'] for event in events] == [0.5] * 3


def parse_config_flag(value, *overrides):
  """`--config=value` as the programs' flag (`inception_jax.config_flag`) parses it."""
  from absl import flags

  from inception_jax import config_flag
  argv = ['prog', f'--config={value}', *overrides]
  holder = flags.FlagValues()
  config_flag.define('config', flag_values=holder, sys_argv=argv)
  holder(argv)
  return holder.config


@pytest.mark.parametrize('where', ['root', 'elsewhere'])
@pytest.mark.parametrize('value,expected', [
    ('demo:tiny', ('demo', 'tiny')), ('demo', ('demo', None)), ('irv2', ('irv2', None)),
    ('finetune:iv3', ('finetune', 'iv3')), ('configs/demo.py:tiny', ('demo', 'tiny')),
    ('configs/iv4.py', ('iv4', None))])
def test_config_flag_takes_a_name_or_a_file(value, expected, where, tmp_path, monkeypatch):
  # Elsewhere there is no configs/ folder: configs/NAME.py is then the packaged config NAME, as a
  # released package's user, who copies the README's commands, needs it.
  from train_utils import ROOT
  monkeypatch.chdir(ROOT if where == 'root' else tmp_path)
  name, arg = expected
  module = importlib.import_module(f'configs.{name}')
  config = parse_config_flag(value, '--config.batch_size=3')
  assert config.batch_size == 3 and config.is_locked
  config.unlock()
  config.batch_size = (module.get_config() if arg is None else module.get_config(arg)).batch_size
  assert config == (module.get_config() if arg is None else module.get_config(arg))


def test_configs_by_name_in_python():
  from inception_jax import configs as packaged
  assert packaged.names() == sorted([name for name, _ in RUNNABLE] + ['default'])
  assert packaged.get('demo:tiny') == demo.get_config('tiny')
  assert packaged.get('irv2') == imagenet.get_config('irv2')
  assert os.path.samefile(packaged.__path__[0], configs.__path__[0])  # the repository's


@pytest.mark.parametrize('value,message', [
    ('nothere', "--config=nothere: there is no config named 'nothere'"),
    ('configs/nothere.py', '--config=configs/nothere.py: no such config file'),
    ('some/dir/x.py:arg', '--config=some/dir/x.py:arg: no such config file')])
def test_an_unknown_config_lists_the_names(value, message, tmp_path, monkeypatch):
  from inception_jax import errors
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    parse_config_flag(value)
  text = errors.flag_error(error.value, ['prog', f'--config={value}'])
  assert text.startswith(message) and 'cifar10, default, demo, finetune, imagenet' in text


def test_a_config_file_of_ones_own_imports_the_packaged_ones(tmp_path, monkeypatch):
  from inception_jax import errors
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'mine.py').write_text('from inception_jax.configs import demo\n\n\n'
                                    'def get_config(arg):\n'
                                    '  config = demo.get_config(arg)\n'
                                    '  config.batch_size = 5\n'
                                    '  return config\n')
  config = parse_config_flag('mine.py:tiny')
  assert config.batch_size == 5 and config.num_train_steps == 8
  # A copy of a packaged config keeps its relative import: the error says what to write instead.
  (tmp_path / 'copy.py').write_text('from . import default\n\n\n'
                                    'def get_config():\n'
                                    '  return default.get_config()\n')
  with pytest.raises(ImportError) as error:
    parse_config_flag('copy.py')
  assert 'from inception_jax.configs import default' in errors.flag_error(error.value)
