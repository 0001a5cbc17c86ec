"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

import importlib.util
import os
import sys

from inception_jax import startup

__version__ = '0.1.0'

startup.on_import()  # before JAX starts: see startup's docstring


def _bind_configs() -> None:
  """Makes a source checkout's top-level configs/ importable as `inception_jax.configs`, the name
  that setup.py installs them under (a wheel holds inception_jax/configs/; an editable install maps
  the name to configs/): one name for the configs in every layout, and always the configs beside
  this code."""
  here = os.path.dirname(os.path.abspath(__file__))
  source = os.path.join(os.path.dirname(here), 'configs')
  name = f'{__name__}.configs'
  if (os.path.isdir(os.path.join(here, 'configs')) or name in sys.modules
      or not os.path.isfile(os.path.join(source, 'default.py'))):
    return
  spec = importlib.util.spec_from_file_location(name, os.path.join(source, '__init__.py'),
                                                submodule_search_locations=[source])
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  globals()['configs'] = module


_bind_configs()
