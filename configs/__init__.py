"""Experiment configs, run as `python -m inception_jax.main --config=NAME[:ARG]` (`demo`, `irv2`,
`finetune:iv3`, ...) or by file, `--config=configs/NAME.py[:ARG]`.

In the repository they are the top-level package `configs`; the package installs them as
`inception_jax.configs` (setup.py), where a released package's user finds them by name. They import
each other relatively (`from . import default`), so they work under either name. In Python:

    from inception_jax import configs
    config = configs.get('demo:tiny')
"""

import importlib
import pkgutil
from types import ModuleType


def names() -> list[str]:
  """The configs' names: the files of this package (default.py, the recipe, among them)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_'))


def module(name: str) -> ModuleType:
  """The config file `name` as a module; an unknown name is an error that lists the names."""
  if name not in names():
    raise ValueError(f'There is no config named {name!r}; the configs are {", ".join(names())} '
                     '(or give a config file\'s path).')
  return importlib.import_module(f'{__name__}.{name}')


def get(spec: str):
  """The config `spec` names, `NAME` or `NAME:ARG` as on the command line (`demo:tiny`), unlocked:
  `module(NAME).get_config(ARG)`."""
  name, colon, arg = spec.partition(':')
  config_module = module(name)
  return config_module.get_config(arg) if colon else config_module.get_config()
