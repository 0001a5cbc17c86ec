"""Every config loads, names a real model and dataset, and documents the command that runs it."""

import importlib

import pytest

from inception_jax.data import known_datasets
from inception_jax.models import create, list_models
from inception_jax.steps import options_from_config

CONFIGS = ['iv3', 'iv4', 'irv1', 'irv2', 'irv2_paper', 'demo']


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_complete_and_documented(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  assert config.model.name in list_models()
  assert config.dataset.name.split(':')[0] in known_datasets()
  assert f'--config=configs/{name}.py' in module.__doc__
  create(config.model.name, **options_from_config(config, num_classes=1000))


@pytest.mark.parametrize('arg,model', [('iv3', 'inception_v3'), ('irv2', 'inception_resnet_v2'),
                                       ('irv2_paper', 'inception_resnet_v2_paper')])
def test_cifar10_config_takes_the_model_as_argument(arg, model):
  from configs import cifar10
  config = cifar10.get_config(arg)
  assert config.model.name == model and config.model.small_inputs
  assert config.dataset.name == 'cifar10' and config.dataset.image_size == 32


def test_cifar10_config_rejects_an_unknown_model():
  from configs import cifar10
  with pytest.raises(ValueError, match='iv3, iv4, irv1, irv2, irv2_paper'):
    cifar10.get_config('resnet50')


def test_configs_are_locked_against_misspelt_fields():
  from configs import irv2
  config = irv2.get_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.learning_rat = 0.1
