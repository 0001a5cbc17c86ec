"""TensorFlow, which the project uses on the host only (tf.data, TFDS, reading TF-Slim
checkpoints), imported with GPUs and TPUs hidden from it (`tensorflow()`): JAX owns the
accelerators. Importing this module does not import TensorFlow.

`ENVIRONMENT` holds the defaults that `import inception_jax` sets (`set_defaults`), each one only
where the environment has no value of its own:
- TensorFlow's C++ logs are kept to errors (`TF_CPP_MIN_LOG_LEVEL=2`) and its oneDNN kernels off
  (`TF_ENABLE_ONEDNN_OPTS=0`): they speed up TensorFlow's matrix products and convolutions, which
  this project never runs in TensorFlow, and announce themselves at import with a notice about
  round-off that concerns nothing here.
- Object-store paths (gs://, s3://) go through `etils.epath`'s fsspec backend (gcsfs for gs://)
  rather than TensorFlow's gfile (`EPATH_USE_TF=false`, read by etils.epath on its first URL):
  the one layer that Orbax, TFDS and this project share, which honours a GCS emulator's address
  (`inception_jax.workdir`).
"""

from __future__ import annotations

import functools
import os
import warnings

ENVIRONMENT = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0', 'EPATH_USE_TF': 'false'}


def set_defaults() -> None:
  """Sets each of `ENVIRONMENT` that the environment does not set."""
  for name, value in ENVIRONMENT.items():
    os.environ.setdefault(name, value)


@functools.cache
def tensorflow():
  """The `tensorflow` module, with GPUs and TPUs hidden from it (it only feeds the host side)."""
  # deferred: the point of this module (TensorFlow loads when first needed)
  import tensorflow as tf
  for kind in ('GPU', 'TPU'):
    if not tf.config.list_physical_devices(kind):
      continue
    try:
      tf.config.set_visible_devices([], kind)
    except RuntimeError:  # TensorFlow already initialised its devices
      warnings.warn(f'TensorFlow started before inception_jax could hide the {kind}s from it, so '
                    'it may hold accelerator memory that JAX needs. Import inception_jax (or call '
                    'inception_jax.tf_import.tensorflow()) before using TensorFlow.', stacklevel=2)
  return tf
