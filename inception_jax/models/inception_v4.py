"""Inception-v4 (Szegedy et al. 2017, Figs. 3-9): identical in the paper, TF-slim and timm.

Variable scopes follow TF-slim's `inception_v4.py`, so its checkpoint maps name by name.
"""

from __future__ import annotations

import jax

from inception_jax.models.base import InceptionNetwork
from inception_jax.models.layers import AVG_POOL_3X3, MAX_POOL_3X3_S2, Conv, Fork, Mixed, Pool
from inception_jax.models.names import lettered


class Mixed3a(Mixed):
  """Stem, first split (Fig. 3): 3x3/2 max-pool beside a 3x3/2 conv 96 -> 73x73x160."""
  stride: int = 2

  def towers(self):
    return (
        (Pool('max', 3, self.stride, 'VALID'),),
        (Conv(96, 3, 'Conv2d_0a_3x3', self.stride, 'VALID'),),
    )


class Mixed4a(Mixed):
  """Stem, second split (Fig. 3): two towers ending in 3x3 VALID convs of 96 -> 71x71x192."""

  def towers(self):
    return (
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(96, 3, 'Conv2d_1a_3x3', padding='VALID')),
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(64, (1, 7), 'Conv2d_0b_1x7'),
         Conv(64, (7, 1), 'Conv2d_0c_7x1'), Conv(96, 3, 'Conv2d_1a_3x3', padding='VALID')),
    )


class Mixed5a(Mixed):
  """Stem, third split (Fig. 3): 3x3/2 conv 192 beside a 3x3/2 max-pool -> 35x35x384."""

  def towers(self):
    return (
        (Conv(192, 3, 'Conv2d_1a_3x3', 2, 'VALID'),),
        (MAX_POOL_3X3_S2,),
    )


class InceptionA(Mixed):
  """Inception-A (Fig. 4): the 35x35 block, 384 channels out."""

  def towers(self):
    return (
        (Conv(96, 1, 'Conv2d_0a_1x1'),),
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(96, 3, 'Conv2d_0b_3x3')),
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(96, 3, 'Conv2d_0b_3x3'), Conv(96, 3, 'Conv2d_0c_3x3')),
        (AVG_POOL_3X3, Conv(96, 1, 'Conv2d_0b_1x1')),
    )


class ReductionA(Mixed):
  """Reduction-A (Fig. 7): 35x35 -> 17x17; n + m + input channels out.

  k, l, m, n are the filter counts of Table 1: Inception-v4 (192, 224, 256, 384),
  Inception-ResNet-v1 (192, 192, 256, 384), Inception-ResNet-v2 (256, 256, 384, 384); Inception-v3's
  Mixed_6a is the same block with (64, 96, 96, 384).
  """
  k: int = 192
  l: int = 224
  m: int = 256
  n: int = 384
  # TF-slim's Inception-v3 calls its stride-2 convs 'Conv2d_1a_1x1' although they are 3x3.
  stride_2_name: str = 'Conv2d_1a_3x3'

  def towers(self):
    return (
        (Conv(self.n, 3, self.stride_2_name, 2, 'VALID'),),
        (Conv(self.k, 1, 'Conv2d_0a_1x1'), Conv(self.l, 3, 'Conv2d_0b_3x3'),
         Conv(self.m, 3, self.stride_2_name, 2, 'VALID')),
        (MAX_POOL_3X3_S2,),
    )


class InceptionB(Mixed):
  """Inception-B (Fig. 5): the 17x17 block with factorised 7x7 convs, 1024 channels out."""

  def towers(self):
    return (
        (Conv(384, 1, 'Conv2d_0a_1x1'),),
        (Conv(192, 1, 'Conv2d_0a_1x1'), Conv(224, (1, 7), 'Conv2d_0b_1x7'),
         Conv(256, (7, 1), 'Conv2d_0c_7x1')),
        (Conv(192, 1, 'Conv2d_0a_1x1'), Conv(192, (7, 1), 'Conv2d_0b_7x1'),
         Conv(224, (1, 7), 'Conv2d_0c_1x7'), Conv(224, (7, 1), 'Conv2d_0d_7x1'),
         Conv(256, (1, 7), 'Conv2d_0e_1x7')),
        (AVG_POOL_3X3, Conv(128, 1, 'Conv2d_0b_1x1')),
    )


class ReductionB(Mixed):
  """Reduction-B of Inception-v4 (Fig. 8): 17x17 -> 8x8, 1536 channels out."""

  def towers(self):
    return (
        (Conv(192, 1, 'Conv2d_0a_1x1'), Conv(192, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (Conv(256, 1, 'Conv2d_0a_1x1'), Conv(256, (1, 7), 'Conv2d_0b_1x7'),
         Conv(320, (7, 1), 'Conv2d_0c_7x1'), Conv(320, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (MAX_POOL_3X3_S2,),
    )


class InceptionC(Mixed):
  """Inception-C (Fig. 6): the 8x8 block whose towers split into 1x3 and 3x1 ends, 1536 out."""

  def towers(self):
    return (
        (Conv(256, 1, 'Conv2d_0a_1x1'),),
        (Conv(384, 1, 'Conv2d_0a_1x1'),
         Fork((Conv(256, (1, 3), 'Conv2d_0b_1x3'), Conv(256, (3, 1), 'Conv2d_0c_3x1')))),
        (Conv(384, 1, 'Conv2d_0a_1x1'), Conv(448, (3, 1), 'Conv2d_0b_3x1'),
         Conv(512, (1, 3), 'Conv2d_0c_1x3'),
         Fork((Conv(256, (1, 3), 'Conv2d_0d_1x3'), Conv(256, (3, 1), 'Conv2d_0e_3x1')))),
        (AVG_POOL_3X3, Conv(256, 1, 'Conv2d_0b_1x1')),
    )


def v4_stem(net: InceptionNetwork, x: jax.Array, train: bool) -> jax.Array:
  """The stem of Inception-v4 and of the paper's Inception-ResNet-v2 (Fig. 3): 299 -> 35x35x384."""
  ops = net.ops
  x = net.stem_convs(x, train)
  x = Mixed3a(ops, stride=net.stem_stride, name='Mixed_3a')(x, train)
  x = Mixed4a(ops, name='Mixed_4a')(x, train)
  return Mixed5a(ops, name='Mixed_5a')(x, train)


class InceptionV4(InceptionNetwork):
  """Inception-v4 (Fig. 9): stem, 4x Inception-A, Reduction-A, 7x Inception-B, Reduction-B,
  3x Inception-C. 42.7M parameters (with BatchNorm gamma, 1000 classes), 12.3 GMACs at 299x299."""
  default_repeats = (4, 7, 3)
  aux_names = ('Conv2d_2a', 'Aux_logits')

  def body(self, x, train):
    n35, n17, n8 = self.stage_repeats
    x = v4_stem(self, x, train)
    names = lettered('Mixed_5', n35)
    x = self.blocks(InceptionA, names, x, train)
    x = ReductionA(self.ops, name='Mixed_6a')(x, train)
    names = lettered('Mixed_6', n17)
    aux_input = x = self.blocks(InceptionB, names, x, train)
    x = ReductionB(self.ops, name='Mixed_7a')(x, train)
    names = lettered('Mixed_7', n8)
    return self.blocks(InceptionC, names, x, train), aux_input
