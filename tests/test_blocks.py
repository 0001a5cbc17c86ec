"""Output shapes of every paper block at its place in the network (shape inference only)."""

import jax
import jax.numpy as jnp
import pytest

from inception_jax.models import inception_resnet as irn, inception_v3 as v3, inception_v4 as v4
from inception_jax.models.layers import Ops

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"

OPS = Ops()

BLOCKS = {
    # Inception-v4 (paper Figs. 3-8)
    'v4_mixed_3a': (v4.Mixed3a(OPS), (147, 147, 64), (73, 73, 160)),
    'v4_mixed_4a': (v4.Mixed4a(OPS), (73, 73, 160), (71, 71, 192)),
    'v4_mixed_5a': (v4.Mixed5a(OPS), (71, 71, 192), (35, 35, 384)),
    'v4_inception_a': (v4.InceptionA(OPS), (35, 35, 384), (35, 35, 384)),
    'v4_reduction_a': (v4.ReductionA(OPS), (35, 35, 384), (17, 17, 1024)),
    'v4_inception_b': (v4.InceptionB(OPS), (17, 17, 1024), (17, 17, 1024)),
    'v4_reduction_b': (v4.ReductionB(OPS), (17, 17, 1024), (8, 8, 1536)),
    'v4_inception_c': (v4.InceptionC(OPS), (8, 8, 1536), (8, 8, 1536)),
    # Inception-ResNet-v2 as released
    'irv2_mixed_5b': (irn.Mixed5b(OPS), (35, 35, 192), (35, 35, 320)),
    'irv2_block35': (irn.Block35(OPS, scale=0.17), (35, 35, 320), (35, 35, 320)),
    'irv2_reduction_a': (v4.ReductionA(OPS, 256, 256, 384, 384), (35, 35, 320), (17, 17, 1088)),
    'irv2_block17': (irn.Block17(OPS, scale=0.1), (17, 17, 1088), (17, 17, 1088)),
    'irv2_reduction_b': (irn.ReductionBResidual(OPS), (17, 17, 1088), (8, 8, 2080)),
    'irv2_block8': (irn.Block8(OPS, scale=0.2), (8, 8, 2080), (8, 8, 2080)),
    # Inception-ResNet-v1 (paper Figs. 10-14)
    'irv1_block35': (irn.Block35(OPS, branch_1=(32, 32), branch_2=(32, 32, 32)),
                     (35, 35, 256), (35, 35, 256)),
    'irv1_reduction_a': (v4.ReductionA(OPS, 192, 192, 256, 384), (35, 35, 256), (17, 17, 896)),
    'irv1_block17': (irn.Block17(OPS, branch_0=128, branch_1=(128, 128, 128)),
                     (17, 17, 896), (17, 17, 896)),
    'irv1_reduction_b': (irn.ReductionBResidual(OPS, widths=(384, 256, 256), tower_2_middle=256),
                         (17, 17, 896), (8, 8, 1792)),
    'irv1_block8': (irn.Block8(OPS, branch_1=(192, 192, 192)), (8, 8, 1792), (8, 8, 1792)),
    # The paper's Inception-ResNet-v2 widths (see inception_resnet.py)
    'irv2_paper_reduction_a': (v4.ReductionA(OPS, 256, 256, 384, 384), (35, 35, 384),
                               (17, 17, 1152)),
    'irv2_paper_reduction_b': (irn.ReductionBResidual(OPS), (17, 17, 1152), (8, 8, 2144)),
    # Inception-v3
    'v3_mixed_5b': (v3.InceptionV3A(OPS, pool_features=32), (35, 35, 192), (35, 35, 256)),
    'v3_mixed_5c': (v3.InceptionV3A(OPS), (35, 35, 256), (35, 35, 288)),
    'v3_mixed_6a': (v4.ReductionA(OPS, 64, 96, 96, 384), (35, 35, 288), (17, 17, 768)),
    'v3_mixed_6b': (v3.InceptionV3C(OPS, c7=128), (17, 17, 768), (17, 17, 768)),
    'v3_mixed_7a': (v3.InceptionV3D(OPS), (17, 17, 768), (8, 8, 1280)),
    'v3_mixed_7b': (v3.InceptionV3E(OPS), (8, 8, 1280), (8, 8, 2048)),
}


@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_block_output_shape(name):
  block, in_shape, out_shape = BLOCKS[name]
  x = jax.ShapeDtypeStruct((2, *in_shape), jnp.float32)
  out = jax.eval_shape(lambda x: block.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape == (2, *out_shape)


def test_residual_block_adds_scaled_residual():
  """x + scale * up(...): with the up conv zeroed the block is relu(x); scale multiplies the
  rest."""
  block = irn.Block8(OPS, scale=0.2)
  x = jax.random.normal(jax.random.key(0), (1, 3, 3, 16))
  variables = block.init(jax.random.key(1), x)
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if 'Conv2d_1x1' == path[1].key else v,
      variables)
  assert jnp.allclose(block.apply(zeroed, x), jax.nn.relu(x))
  linear = irn.Block8(OPS, scale=0.2, activation=False)
  unscaled = irn.Block8(OPS, scale=1.0, activation=False)
  residual = unscaled.apply(variables, x) - x
  assert jnp.allclose(linear.apply(variables, x) - x, 0.2 * residual, atol=1e-5)
  assert float(jnp.abs(residual).max()) > 0


def test_average_pool_excludes_padding():
  """TF's SAME average pool divides by the number of real pixels: a constant map stays constant."""
  x = jnp.ones((1, 4, 4, 1))
  assert jnp.allclose(OPS.pool(x, v4.AVG_POOL_3X3), 1.0)


def test_average_pool_can_include_padding_as_pytorch_does():
  """PyTorch's default (timm's Inception-v3): corners average 4 real pixels over 9 positions."""
  pooled = Ops(avg_pool_include_pad=True).pool(jnp.ones((1, 4, 4, 1)), v4.AVG_POOL_3X3)[0, :, :, 0]
  assert jnp.allclose(pooled[0, 0], 4 / 9) and jnp.allclose(pooled[0, 1], 6 / 9)
  assert jnp.allclose(pooled[1:3, 1:3], 1.0)
