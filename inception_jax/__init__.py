"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

__version__ = '0.1.0'
