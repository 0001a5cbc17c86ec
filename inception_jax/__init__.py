"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

from inception_jax import runtime

__version__ = '0.1.0'

runtime.on_import()  # before JAX starts: see runtime's docstring
