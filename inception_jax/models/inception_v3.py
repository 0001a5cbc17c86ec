"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), the paper's
baseline.

Built as TF-slim's `inception_v3.py` and timm build it; variable scopes follow TF-slim, including
its irregular names (Mixed_5c's `Conv_1_0c_5x5`, Mixed_6a's 3x3 convs called `Conv2d_1a_1x1`).
"""

from __future__ import annotations

import jax

from inception_jax.errors import ConfigError
from inception_jax.models.base import InceptionNetwork
from inception_jax.models.inception_v4 import ReductionA
from inception_jax.models.layers import AVG_POOL_3X3, MAX_POOL_3X3_S2, Conv, Fork, Mixed, Pool


class InceptionV3A(Mixed):
  """The 35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pooled towers."""
  pool_features: int = 64
  branch_1_names: tuple[str, str] = ('Conv2d_0a_1x1', 'Conv2d_0b_5x5')

  def towers(self):
    b1a, b1b = self.branch_1_names
    return (
        (Conv(64, 1, 'Conv2d_0a_1x1'),),
        (Conv(48, 1, b1a), Conv(64, 5, b1b)),
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(96, 3, 'Conv2d_0b_3x3'), Conv(96, 3, 'Conv2d_0c_3x3')),
        (AVG_POOL_3X3, Conv(self.pool_features, 1, 'Conv2d_0b_1x1')),
    )


class InceptionV3C(Mixed):
  """The 17x17 block (Mixed_6b-e) with factorised 7x7 convs of width `c7`, 768 channels out."""
  c7: int = 128

  def towers(self):
    c7 = self.c7
    return (
        (Conv(192, 1, 'Conv2d_0a_1x1'),),
        (Conv(c7, 1, 'Conv2d_0a_1x1'), Conv(c7, (1, 7), 'Conv2d_0b_1x7'),
         Conv(192, (7, 1), 'Conv2d_0c_7x1')),
        (Conv(c7, 1, 'Conv2d_0a_1x1'), Conv(c7, (7, 1), 'Conv2d_0b_7x1'),
         Conv(c7, (1, 7), 'Conv2d_0c_1x7'), Conv(c7, (7, 1), 'Conv2d_0d_7x1'),
         Conv(192, (1, 7), 'Conv2d_0e_1x7')),
        (AVG_POOL_3X3, Conv(192, 1, 'Conv2d_0b_1x1')),
    )


class InceptionV3D(Mixed):
  """The 17x17 -> 8x8 reduction (Mixed_7a), 1280 channels out."""

  def towers(self):
    return (
        (Conv(192, 1, 'Conv2d_0a_1x1'), Conv(320, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (Conv(192, 1, 'Conv2d_0a_1x1'), Conv(192, (1, 7), 'Conv2d_0b_1x7'),
         Conv(192, (7, 1), 'Conv2d_0c_7x1'), Conv(192, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (MAX_POOL_3X3_S2,),
    )


class InceptionV3E(Mixed):
  """The 8x8 block (Mixed_7b-c) with split 1x3/3x1 ends, 2048 channels out."""
  branch_1_3x1_name: str = 'Conv2d_0b_3x1'

  def towers(self):
    return (
        (Conv(320, 1, 'Conv2d_0a_1x1'),),
        (Conv(384, 1, 'Conv2d_0a_1x1'),
         Fork((Conv(384, (1, 3), 'Conv2d_0b_1x3'), Conv(384, (3, 1), self.branch_1_3x1_name)))),
        (Conv(448, 1, 'Conv2d_0a_1x1'), Conv(384, 3, 'Conv2d_0b_3x3'),
         Fork((Conv(384, (1, 3), 'Conv2d_0c_1x3'), Conv(384, (3, 1), 'Conv2d_0d_3x1')))),
        (AVG_POOL_3X3, Conv(192, 1, 'Conv2d_0b_1x1')),
    )


def v3_stem_convs(net: InceptionNetwork, x: jax.Array, train: bool) -> jax.Array:
  """Inception-v3's stem up to its last pool, 299 -> 71x71x192; Inception-ResNet-v1's (Fig. 14)
  starts the same. The 1x1 conv is VALID as in TF-slim: at 1x1 and stride 1, the same as SAME.
  """
  ops = net.ops
  x = net.stem_convs(x, train)
  x = ops.pool(x, Pool('max', 3, net.stem_stride, 'VALID'))
  x = ops.conv(80, 1, 'Conv2d_3b_1x1', padding='VALID')(x, train)
  return ops.conv(192, 3, 'Conv2d_4a_3x3', padding='VALID')(x, train)


def v3_stem(net: InceptionNetwork, x: jax.Array, train: bool) -> jax.Array:
  """The stem of Inception-v3, shared by the released Inception-ResNet-v2: 299 -> 35x35x192."""
  return net.ops.pool(v3_stem_convs(net, x, train), MAX_POOL_3X3_S2)


class InceptionV3(InceptionNetwork):
  """Inception-v3: 23.8M parameters (with BatchNorm gamma, 1000 classes), 5.7 GMACs at 299x299.

  Its blocks change width from one to the next, so `repeats` does not apply; `scan_blocks` scans the
  one pair of identical blocks (Mixed_6c, Mixed_6d).
  """
  aux_names = ('Conv2d_2a_5x5', 'Conv2d_2b_1x1')

  def body(self, x, train):
    if self.repeats is not None:
      raise ConfigError('inception_v3 has no runs of identical blocks, so repeats does not apply; '
                        'use depth_multiplier for a smaller variant.')
    ops = self.ops
    x = v3_stem(self, x, train)
    x = InceptionV3A(ops, pool_features=32, name='Mixed_5b')(x, train)
    x = InceptionV3A(ops, branch_1_names=('Conv2d_0b_1x1', 'Conv_1_0c_5x5'),
                     name='Mixed_5c')(x, train)
    x = InceptionV3A(ops, name='Mixed_5d')(x, train)
    x = ReductionA(ops, 64, 96, 96, 384, stride_2_name='Conv2d_1a_1x1', name='Mixed_6a')(x, train)
    x = InceptionV3C(ops, c7=128, name='Mixed_6b')(x, train)
    x = self.blocks(InceptionV3C, ('Mixed_6c', 'Mixed_6d'), x, train, c7=160)
    aux_input = x = InceptionV3C(ops, c7=192, name='Mixed_6e')(x, train)
    x = InceptionV3D(ops, name='Mixed_7a')(x, train)
    x = InceptionV3E(ops, name='Mixed_7b')(x, train)
    x = InceptionV3E(ops, branch_1_3x1_name='Conv2d_0c_3x1', name='Mixed_7c')(x, train)
    return x, aux_input
