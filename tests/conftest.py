"""Shared test set-up: the programs' start-up settings, a persistent XLA compilation cache so that
repeated tiny trainings compile once, XLA's optimisations off unless a test asks for them, and a
trained tiny workdir."""

import os
import tempfile

# The suite's own compilation cache (before inception_jax, whose default is the user's cache).
CACHE = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                              os.path.join(tempfile.gettempdir(), 'inception_jax_test_xla_cache'))
# The tests reach no real bucket: gcsfs's probe of a bucket's type (a gRPC call to Google's control
# plane, retried for about 40 s against an emulator) is off. Read when gcsfs is imported.
os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
from inception_jax import startup  # noqa: E402

startup.start()  # the programs' own settings, before JAX starts
# Most tests train tiny networks for a few steps, where compiling costs more than running: without
# XLA's optimisations the suite ran 1.2x faster (BENCHMARKS.md). Subprocesses inherit the setting,
# so a run in a subprocess and its in-process twin compute the same numbers. Tests of real work,
# or of numerics tuned to the optimised programs, take the `optimized` fixture.
NO_OPTIMIZATIONS = 'JAX_DISABLE_MOST_OPTIMIZATIONS'
os.environ.setdefault(NO_OPTIMIZATIONS, '1')
import jax  # noqa: E402
import pytest  # noqa: E402

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


@pytest.fixture
def optimized(monkeypatch):
  """XLA's optimisations on for this test and the subprocesses it starts."""
  monkeypatch.setenv(NO_OPTIMIZATIONS, '0')
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='session')
def gcs_emulator():
  """A GCS API server on 127.0.0.1 (`tests/gcs.py`) that every storage layer of this process and
  of the processes it starts talks to."""
  from gcs import Emulator
  emulator = Emulator()
  yield emulator
  emulator.stop()


@pytest.fixture
def bucket(gcs_emulator):
  """A new, empty bucket on the emulator: its gs:// URL."""
  return gcs_emulator.bucket()
