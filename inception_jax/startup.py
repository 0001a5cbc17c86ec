"""Start-up settings: the same for the programs, the tests and users of the Python API.

`on_import` runs when `inception_jax` is imported, before JAX starts (it does not import JAX):
- TensorFlow quiet, and object-store paths through fsspec rather than TensorFlow's gfile:
  environment defaults (`inception_jax.tf_import`, whose `tensorflow()` imports TensorFlow with
  the accelerators hidden from it);
- the XLA:CPU defaults and JAX's persistent compilation cache (`inception_jax.xla_setup`);
- libtpu kept unstarted on a machine without TPU chips (`inception_jax.tpu_guard`).
`start()` is what every program runs first: the above, and library logs down to warnings.
"""

from __future__ import annotations

from inception_jax import tf_import, tpu_guard, xla_setup


def on_import() -> None:
  """Run by `import inception_jax`: TensorFlow quiet, the XLA:CPU defaults, the compilation cache,
  and libtpu unstarted where there are no TPUs, in that order."""
  tf_import.set_defaults()
  xla_setup.use_xla_cpu_defaults()
  xla_setup.use_compilation_cache()
  tpu_guard.quiet_libtpu()


def start() -> None:
  """What every program runs before anything else: `on_import`'s settings, Python library logs
  (absl, Orbax) at warnings and above unless `--verbosity` was given, and the noise of a failed
  checkpoint read or write filtered (`faults.quiet_library_faults`)."""
  on_import()
  # Here rather than at the top: `import inception_jax` stays light (faults brings in workdir, and
  # with it etils and fsspec).
  from inception_jax import faults
  faults.quiet_library_faults()
  # deferred: `import inception_jax` loads no absl; programs do
  from absl import flags, logging
  if not (flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].present):
    logging.set_verbosity(logging.WARNING)
