"""Shared test set-up: the programs' start-up settings, a persistent XLA compilation cache so that
repeated tiny trainings compile once, and a trained tiny workdir."""

import os
import tempfile

from inception_jax import runtime

runtime.start()  # the programs' own settings, before JAX starts (subprocesses inherit XLA_FLAGS)
import jax  # noqa: E402
import pytest  # noqa: E402

CACHE = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                              os.path.join(tempfile.gettempdir(), 'inception_jax_test_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


@pytest.fixture(scope='session')
def straight(tmp_path_factory):
  """An uninterrupted run of the tiny config (train_utils.STEPS steps, by the command line): the
  reference for the resume tests, and a trained workdir for the others."""
  from train_utils import STEPS, run
  workdir = str(tmp_path_factory.mktemp('straight'))
  run(workdir, num_train_steps=STEPS)
  return workdir
