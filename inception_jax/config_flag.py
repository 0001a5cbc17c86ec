"""The programs' `--config` flag (`main`, `aot`): a config by name or by file.

    --config=demo:tiny              a config of `inception_jax.configs` by name, ARG after a colon
    --config=configs/demo.py:tiny   a config file; where no such file exists relative to the current
                                    directory, the config of that name (what an installed package's
                                    user, who has no configs/ folder, gets from the docs' commands)
    --config=path/to/mine.py[:ARG]  any other config file, loaded by ml_collections as ever

A file of `inception_jax.configs`' own directory (the repository's configs/, or the installed
package's) is imported as a module of that package, so that its relative imports (`from . import
default`) work from any directory. An unknown name is an error that lists the names. In Python,
`inception_jax.configs.get('demo:tiny')` returns the same config, unlocked.
"""

import os
import re
import traceback
from types import ModuleType

from absl import flags
from ml_collections import config_flags

from inception_jax import errors

# The flag belongs to the command that calls `define` (its --help lists it), not to this module.
flags.disclaim_key_flags()

HELP = ('The config: a name (demo, irv2, finetune:iv3, ...; NAME:ARG passes ARG to its '
        'get_config) or a config file (configs/irv2.py, path/to/mine.py:ARG); configs/NAME.py '
        'names the packaged config where no such file exists in the current directory.')

# configs/NAME.py (or ./configs/NAME.py) or a bare NAME: the names of packaged configs.
_NAMED = re.compile(r'(?:\./)?configs/(\w+)\.py|(\w+)')


def _package() -> ModuleType:
  from inception_jax import configs  # bound in a source checkout by inception_jax/__init__.py
  return configs


def _is_packaged(path: str) -> bool:
  directory = os.path.dirname(os.path.abspath(path))
  return any(os.path.isdir(d) and os.path.samefile(directory, d) for d in _package().__path__)


def module(value: str) -> tuple[ModuleType | None, str | None]:
  """(The packaged config module that `value`, the flag's value, names, its argument or None), or
  (None, None) for a config file of someone else's, which ml_collections loads by path."""
  path, colon, arg = value.partition(':')
  arg = arg if colon else None
  configs = _package()
  if os.path.isfile(path):
    if _is_packaged(path) and path.endswith('.py'):
      return configs.module(os.path.basename(path)[:-3]), arg
    return None, None
  named = _NAMED.fullmatch(path)
  name = named and (named[1] or named[2])
  if name in configs.names():
    return configs.module(name), arg
  names = ', '.join(configs.names())
  if named and named[2]:
    raise errors.MissingError(f'--config={value}: there is no config named {name!r} (nor a file '
                              f'{path!r} here); the configs are {names}.')
  raise errors.MissingError(f'--config={value}: no such config file (paths are relative to the '
                            f'current directory); the configs by name are {names}.')


class Parser(flags.ArgumentParser):
  """The flag's parser: ml_collections' parser of config files (`files`), taking names too."""

  def __init__(self, files: flags.ArgumentParser, lock_config: bool = True):
    self.files = files
    self.lock_config = lock_config

  def parse(self, argument):
    config_module, arg = module(argument)
    if config_module is None:
      return self.files.parse(argument)
    try:
      config = config_module.get_config() if arg is None else config_module.get_config(arg)
    except (TypeError, ValueError) as e:
      # As ml_collections raises them: absl's flag parser would drop the traceback.
      raise type(e)('Error whilst parsing config file:\n\n' + traceback.format_exc()) from e
    if self.lock_config:
      config.lock()
    return config

  def flag_type(self):
    return self.files.flag_type()


def define(name: str = 'config', flag_values: flags.FlagValues = flags.FLAGS,
           **kwargs) -> flags.FlagHolder:
  """`config_flags.DEFINE_config_file(name)` (overrides `--NAME.FIELD=VALUE`, locked) whose value
  is a name or a file (`module`)."""
  holder = config_flags.DEFINE_config_file(name, None, HELP, flag_values=flag_values,
                                           lock_config=True, **kwargs)
  flag = flag_values[name]
  flag.parser = Parser(flag.parser, lock_config=True)
  return holder
