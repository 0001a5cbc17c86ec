"""Every paper block at its place in the network: output shapes, which channels each branch fills,
parameter counts by hand, BatchNorm's train and eval statistics, residual scaling.

The first tier (README, "Testing") holds the cheap tests; the branch test compiles each block and
runs in the full suite, with one reduction block in the first tier.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from inception_jax.models import inception_resnet as irn, inception_v3 as v3, inception_v4 as v4
from inception_jax.models.layers import Ops

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


@pytest.mark.quick
@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_block_output_shape(name):
  block, in_shape, out_shape = BLOCKS[name]
  x = jax.ShapeDtypeStruct((2, *in_shape), jnp.float32)
  out = jax.eval_shape(lambda x: block.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape == (2, *out_shape)


@pytest.mark.quick
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


@pytest.mark.quick
def test_average_pool_excludes_padding():
  """TF's SAME average pool divides by the number of real pixels: a constant map stays constant."""
  x = jnp.ones((1, 4, 4, 1))
  assert jnp.allclose(OPS.pool(x, v4.AVG_POOL_3X3), 1.0)


@pytest.mark.quick
def test_average_pool_can_include_padding_as_pytorch_does():
  """PyTorch's default (timm's Inception-v3): corners average 4 real pixels over 9 positions."""
  pooled = Ops(avg_pool_include_pad=True).pool(jnp.ones((1, 4, 4, 1)), v4.AVG_POOL_3X3)[0, :, :, 0]
  assert jnp.allclose(pooled[0, 0], 4 / 9) and jnp.allclose(pooled[0, 1], 6 / 9)
  assert jnp.allclose(pooled[1:3, 1:3], 1.0)


# Each block's branches as the concatenation holds them: the channels of each branch with
# variables, or 'pool' for a 3x3/2 VALID max-pool of the input (ANCHORS.md, paper figures).
BRANCHES = {
    'v4_mixed_3a': (v4.Mixed3a(OPS), 64, ('pool', 96)),
    'v4_mixed_5a': (v4.Mixed5a(OPS), 192, (192, 'pool')),
    'v4_reduction_a': (v4.ReductionA(OPS), 384, (384, 256, 'pool')),
    'v4_reduction_b': (v4.ReductionB(OPS), 1024, (192, 320, 'pool')),
    'v4_inception_c': (v4.InceptionC(OPS), 1536, (256, 512, 512, 256)),
    'irv2_mixed_5b': (irn.Mixed5b(OPS), 192, (96, 64, 96, 64)),
    'irv2_reduction_a': (v4.ReductionA(OPS, 256, 256, 384, 384), 320, (384, 384, 'pool')),
    'irv2_reduction_b': (irn.ReductionBResidual(OPS), 1088, (384, 288, 320, 'pool')),
    'irv1_reduction_b': (irn.ReductionBResidual(OPS, widths=(384, 256, 256), tower_2_middle=256),
                         896, (384, 256, 256, 'pool')),
    'v3_mixed_7a': (v3.InceptionV3D(OPS), 768, (320, 192, 'pool')),
}


@pytest.mark.parametrize(
    'name', [pytest.param(n, marks=pytest.mark.quick) if n == 'irv2_reduction_a' else n
             for n in sorted(BRANCHES)])
def test_branches_fill_their_channels_in_order(name):
  """Shifting the BatchNorm offsets of one branch's last convs moves exactly that branch's
  channels, in the paper's order; a max-pool branch is the input's 3x3/2 VALID max-pool, channel
  for channel (a 7x7 input: a SAME pool or conv would misalign it, an average pool would not
  match)."""
  block, channels, widths = BRANCHES[name]
  x = jax.random.normal(jax.random.key(0), (1, 7, 7, channels))
  variables = jax.jit(block.init)(jax.random.key(1), x)
  apply = jax.jit(block.apply)
  out = apply(variables, x)
  assert out.shape[-1] == sum(channels if w == 'pool' else w for w in widths)
  start = 0
  for i, width in enumerate(widths):
    if width == 'pool':
      end = start + channels
      pooled = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), 'VALID')
      assert jnp.array_equal(out[..., start:end], pooled), f'Branch_{i}'
    else:
      end = start + width
      last = block.towers()[i][-1]
      ends = {c.name for c in getattr(last, 'convs', (last,))}  # a Fork ends in several convs
      shift = lambda path, v, i=i, ends=ends: v + 100.0 if (
          path[1].key == f'Branch_{i}' and path[2].key in ends and path[-1].key == 'bias') else v
      shifted = jax.tree_util.tree_map_with_path(shift, variables)
      moved = jnp.any(apply(shifted, x) != out, axis=(0, 1, 2))
      assert jnp.array_equal(jnp.nonzero(moved)[0], jnp.arange(start, end)), f'Branch_{i}'
    start = end


# Each block's conv-BN units as (kernel height, width, in, out), read off ANCHORS.md, and the width
# of its residual 1x1 "up" conv (0: not a residual block).
UNITS = {
    'irv2_mixed_5b': (irn.Mixed5b(OPS), 192, 0, [
        (1, 1, 192, 96), (1, 1, 192, 48), (5, 5, 48, 64), (1, 1, 192, 64), (3, 3, 64, 96),
        (3, 3, 96, 96), (1, 1, 192, 64)]),
    'irv2_block35': (irn.Block35(OPS), 320, 32 + 32 + 64, [
        (1, 1, 320, 32), (1, 1, 320, 32), (3, 3, 32, 32), (1, 1, 320, 32), (3, 3, 32, 48),
        (3, 3, 48, 64)]),
    'irv2_reduction_a': (v4.ReductionA(OPS, 256, 256, 384, 384), 320, 0, [
        (3, 3, 320, 384), (1, 1, 320, 256), (3, 3, 256, 256), (3, 3, 256, 384)]),
    'irv2_block17': (irn.Block17(OPS), 1088, 192 + 192, [
        (1, 1, 1088, 192), (1, 1, 1088, 128), (1, 7, 128, 160), (7, 1, 160, 192)]),
    'irv2_reduction_b': (irn.ReductionBResidual(OPS), 1088, 0, [
        (1, 1, 1088, 256), (3, 3, 256, 384), (1, 1, 1088, 256), (3, 3, 256, 288),
        (1, 1, 1088, 256), (3, 3, 256, 288), (3, 3, 288, 320)]),
    'irv2_block8': (irn.Block8(OPS), 2080, 192 + 256, [
        (1, 1, 2080, 192), (1, 1, 2080, 192), (1, 3, 192, 224), (3, 1, 224, 256)]),
    'irv1_block35': (irn.Block35(OPS, branch_1=(32, 32), branch_2=(32, 32, 32)), 256, 96, [
        (1, 1, 256, 32), (1, 1, 256, 32), (3, 3, 32, 32), (1, 1, 256, 32), (3, 3, 32, 32),
        (3, 3, 32, 32)]),
}


@pytest.mark.quick
@pytest.mark.parametrize('name', sorted(UNITS))
def test_parameter_counts_by_hand(name):
  """Convs without bias, each with a BatchNorm offset (no gamma: TF-slim's default) and two moving
  statistics per channel; a residual block adds its 1x1 up conv with a bias and no BatchNorm."""
  block, channels, up, units = UNITS[name]
  x = jax.ShapeDtypeStruct((1, 9, 9, channels), jnp.float32)
  variables = jax.eval_shape(block.init, jax.random.key(0), x)
  size = lambda tree: sum(v.size for v in jax.tree_util.tree_leaves(tree))
  bn_channels = sum(out for *_, out in units)
  expected = sum(h * w * cin * out for h, w, cin, out in units) + bn_channels
  if up:
    expected += up * channels + channels
    assert variables['params']['Conv2d_1x1']['kernel'].shape == (1, 1, up, channels)
  assert size(variables['params']) == expected
  assert size(variables['batch_stats']) == 2 * bn_channels


def conv_bn_reference(x, kernel, mean, var, bias, epsilon=1e-3):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jax.nn.relu((y - mean) / jnp.sqrt(var + epsilon) + bias), y


@pytest.mark.quick
def test_batchnorm_normalises_by_the_batch_in_training_and_by_moving_statistics_in_eval():
  ops = Ops(bn_momentum=0.9)
  unit = ops.conv(4, 3, 'unit')
  x = jax.random.normal(jax.random.key(0), (3, 5, 5, 2))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  mean, var = jnp.array([0.5, -1.0, 2.0, 0.0]), jnp.array([4.0, 0.25, 1.0, 9.0])
  bias = jnp.array([0.1, 3.0, -0.2, 1.0])
  variables = {'params': {'kernel': kernel, 'BatchNorm': {'bias': bias}},
               'batch_stats': {'BatchNorm': {'mean': mean, 'var': var}}}
  expected, y = conv_bn_reference(x, kernel, mean, var, bias)
  assert jnp.allclose(jax.jit(unit.apply, static_argnums=2)(variables, x, False), expected,
                      atol=1e-5)
  out, updated = jax.jit(lambda v: unit.apply(v, x, True, mutable=['batch_stats']))(variables)
  batch_mean, batch_var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
  assert jnp.allclose(out, conv_bn_reference(x, kernel, batch_mean, batch_var, bias)[0],
                      atol=1e-5)
  stats = updated['batch_stats']['BatchNorm']
  assert jnp.allclose(stats['mean'], 0.9 * mean + 0.1 * batch_mean, atol=1e-6)
  assert jnp.allclose(stats['var'], 0.9 * var + 0.1 * batch_var, atol=1e-5)


@pytest.mark.quick
def test_training_reaches_every_batchnorm_of_a_block():
  """`train` reaches every tower: each BatchNorm's moving mean moves off its initial zeros."""
  block = irn.Block35(OPS)
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 16))
  variables = jax.jit(block.init)(jax.random.key(1), x)
  train = jax.jit(lambda v: block.apply(v, x, True, mutable=['batch_stats']))
  out, updated = train(variables)
  means = {jax.tree_util.keystr(p): v for p, v in
           jax.tree_util.tree_leaves_with_path(updated['batch_stats']) if p[-1].key == 'mean'}
  assert len(means) == 6 and all(jnp.all(v != 0) for v in means.values()), means.keys()
  assert not jnp.allclose(out, jax.jit(block.apply)(variables, x))


@pytest.mark.quick
@pytest.mark.parametrize('block_class', [irn.Block35, irn.Block17])
def test_residual_scale_is_linear_and_the_relu_follows_the_sum(block_class):
  """relu(x + s * up(towers(x))): s = 0 gives relu(x) whatever the weights; the change a linear
  block makes to x is proportional to s; a learned scale starts at s and computes the same."""
  x = jax.random.normal(jax.random.key(0), (1, 3, 3, 16))
  variables = jax.jit(block_class(OPS).init)(jax.random.key(1), x)

  @functools.partial(jax.jit, static_argnames=('activation', 'learn_scale'))
  def apply(variables, scale, activation=True, learn_scale=False):  # scale: traced, one compile
    block = block_class(OPS, scale=scale, activation=activation, learn_scale=learn_scale)
    return block.apply(variables, x)

  assert jnp.array_equal(apply(variables, 0.0), jax.nn.relu(x))
  assert jnp.array_equal(apply(variables, 0.0, False), x)
  small = apply(variables, 0.1, False) - x
  large = apply(variables, 0.3, False) - x
  assert float(jnp.abs(small).max()) > 1e-3
  assert jnp.allclose(large, 3 * small, rtol=1e-4, atol=1e-5)
  assert jnp.allclose(apply(variables, 0.1), jax.nn.relu(x + small), atol=1e-6)
  learned = jax.jit(block_class(OPS, scale=0.1, learn_scale=True).init)(jax.random.key(1), x)
  assert learned['params'].pop('residual_scale') == jnp.float32(0.1)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, learned, variables))
  learned['params']['residual_scale'] = jnp.float32(0.1)
  assert jnp.allclose(apply(learned, 0.1, learn_scale=True), apply(variables, 0.1), atol=1e-6)
