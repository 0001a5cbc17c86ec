"""Shared test set-up: a persistent XLA compilation cache so repeated tiny trainings compile once."""

import os
import tempfile

from inception_jax import runtime

runtime.start()  # the programs' own settings, before JAX starts (subprocesses inherit XLA_FLAGS)
import jax  # noqa: E402

CACHE = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                              os.path.join(tempfile.gettempdir(), 'inception_jax_test_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
