"""The hand-written CPU gradient of `models/conv.py` is JAX's own gradient."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.models import conv

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"


def grads(fn, x, w, dy):
  return jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w) * dy), argnums=(0, 1)))(x, w)


@pytest.mark.parametrize('kernel,padding', [((1, 1), 'SAME'), ((3, 3), 'SAME'), ((3, 3), 'VALID'),
                                            ((1, 7), 'SAME'), ((7, 1), 'SAME'), ((5, 5), 'SAME')])
def test_conv_gradient_matches_jax(kernel, padding):
  assert jax.default_backend() == 'cpu'  # where the hand-written rule applies
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 9, 8, 5)).astype(np.float32)
  w = rng.standard_normal((*kernel, 5, 4)).astype(np.float32)
  ours = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), padding,
                                                dimension_numbers=conv.NHWC_HWIO)
  theirs = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding,
                                                 dimension_numbers=conv.NHWC_HWIO)
  dy = rng.standard_normal(theirs(x, w).shape).astype(np.float32)
  np.testing.assert_array_equal(ours(x, w), theirs(x, w))
  for a, b in zip(grads(ours, x, w, dy), grads(theirs, x, w, dy)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
