"""Inception-ResNet-v1 and -v2 (Szegedy et al. 2017, Figs. 10-19), with residual scaling.

Three networks:
- `InceptionResNetV2`: Inception-ResNet-v2 as released by TF-slim (and ported by timm and Keras):
  its own stem with Mixed_5b, 10/20/10 blocks, a last Block8 with scale 1 and no ReLU, and a 1x1
  conv to 1536 channels before the pool. The public weights fit this one; scopes follow TF-slim.
- `InceptionResNetV1`: the paper's Figs. 10-15 (no public code implements it exactly).
- `InceptionResNetV2Paper`: the paper's own Inception-ResNet-v2 schema (Fig. 15 with the
  Inception-v4 stem of Fig. 3 and the blocks of Figs. 16-19, 5/10/5 blocks). The paper's figures
  disagree with themselves on two widths, and we choose as follows:
    * Fig. 17 (Inception-ResNet-B) prints a 1x1 "up" conv of 1154 channels, but Reduction-A with
      Table 1's (k, l, m, n) = (256, 256, 384, 384) on the 384-channel stem gives 384 + 384 + 384 =
      1152. A residual sum needs equal widths, so the up conv restores 1152.
    * Fig. 19 (Inception-ResNet-C) prints 2048, but Reduction-B of Fig. 18 gives 384 + 288 + 320 +
      1152 = 2144; the up conv restores 2144.
    * Every block keeps its ReLU (the paper shows no linear last block) and the 8x8 stage feeds the
      average pool directly (the paper shows no 1x1 conv before it).

Residual scaling (Section 3.3): the residual is scaled by 0.1-0.3 before the sum; without it, nets
with more than about 1000 filters "died" early in training. Defaults follow TF-slim: 0.17 for the
35x35 blocks, 0.10 for the 17x17 blocks and 0.20 for the 8x8 blocks. `learn_residual_scale` makes
each block's scale a learned scalar starting from these values. The training step can record how
much each grid's blocks change their input (`models/diagnostics.py`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence, Union

import jax

from inception_jax.errors import ConfigError
from inception_jax.models import diagnostics
from inception_jax.models.base import InceptionNetwork
from inception_jax.models.inception_v3 import v3_stem, v3_stem_convs
from inception_jax.models.inception_v4 import ReductionA, v4_stem
from inception_jax.models.layers import AVG_POOL_3X3, MAX_POOL_3X3_S2, Conv, Mixed, Residual
from inception_jax.models.names import numbered

ResidualScale = Union[float, Sequence[float]]


class Block35(Residual):
  """Inception-ResNet-A (Fig. 10 for v1, Fig. 16 for v2): the 35x35 residual block."""
  grid = '35x35'
  branch_0: int = 32
  branch_1: tuple[int, int] = (32, 32)
  branch_2: tuple[int, int, int] = (32, 48, 64)

  def towers(self):
    (b1a, b1b), (b2a, b2b, b2c) = self.branch_1, self.branch_2
    return (
        (Conv(self.branch_0, 1, 'Conv2d_1x1'),),
        (Conv(b1a, 1, 'Conv2d_0a_1x1'), Conv(b1b, 3, 'Conv2d_0b_3x3')),
        (Conv(b2a, 1, 'Conv2d_0a_1x1'), Conv(b2b, 3, 'Conv2d_0b_3x3'),
         Conv(b2c, 3, 'Conv2d_0c_3x3')),
    )


class Block17(Residual):
  """Inception-ResNet-B (Fig. 11 for v1, Fig. 17 for v2): the 17x17 residual block.

  Its second tower factorises an n x n conv into 1xn and nx1 convs, n = `factor`.
  """
  grid = '17x17'
  branch_0: int = 192
  branch_1: tuple[int, int, int] = (128, 160, 192)
  factor: int = 7

  def towers(self):
    (b1a, b1b, b1c), n = self.branch_1, self.factor
    return (
        (Conv(self.branch_0, 1, 'Conv2d_1x1'),),
        (Conv(b1a, 1, 'Conv2d_0a_1x1'), Conv(b1b, (1, n), f'Conv2d_0b_1x{n}'),
         Conv(b1c, (n, 1), f'Conv2d_0c_{n}x1')),
    )


class Block8(Block17):
  """Inception-ResNet-C (Fig. 13 for v1, Fig. 19 for v2): the 8x8 residual block (1x3, 3x1)."""
  grid = '8x8'
  branch_0: int = 192
  branch_1: tuple[int, int, int] = (192, 224, 256)
  factor: int = 3


class ReductionBResidual(Mixed):
  """Reduction-B of the Inception-ResNets (Fig. 12 for v1, Fig. 18 for v2): 17x17 -> 8x8.

  Three 1x1 256 -> stride-2 towers ending in `widths` channels, beside a max-pool.
  """
  widths: tuple[int, int, int] = (384, 288, 320)
  tower_2_middle: int = 288

  def towers(self):
    w0, w1, w2 = self.widths
    return (
        (Conv(256, 1, 'Conv2d_0a_1x1'), Conv(w0, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (Conv(256, 1, 'Conv2d_0a_1x1'), Conv(w1, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (Conv(256, 1, 'Conv2d_0a_1x1'), Conv(self.tower_2_middle, 3, 'Conv2d_0b_3x3'),
         Conv(w2, 3, 'Conv2d_1a_3x3', 2, 'VALID')),
        (MAX_POOL_3X3_S2,),
    )


class Mixed5b(Mixed):
  """The released Inception-ResNet-v2's last stem block (TF-slim Mixed_5b): 35x35x320."""

  def towers(self):
    return (
        (Conv(96, 1, 'Conv2d_1x1'),),
        (Conv(48, 1, 'Conv2d_0a_1x1'), Conv(64, 5, 'Conv2d_0b_5x5')),
        (Conv(64, 1, 'Conv2d_0a_1x1'), Conv(96, 3, 'Conv2d_0b_3x3'), Conv(96, 3, 'Conv2d_0c_3x3')),
        (AVG_POOL_3X3, Conv(64, 1, 'Conv2d_0b_1x1')),
    )


class InceptionResNet(InceptionNetwork):
  """What the Inception-ResNets share: residual scaling, one factor or one per grid, and the stages
  after the stem; subclasses give the stem in `stem()` and their widths below."""
  residual_scale: ResidualScale = (0.17, 0.10, 0.20)
  # Each residual block learns its own scale, initialised at its grid's `residual_scale`.
  learn_residual_scale: bool = False

  structure_options = (*InceptionNetwork.structure_options, 'learn_residual_scale')
  numeric_options = (*InceptionNetwork.numeric_options, 'residual_scale')
  diagnostic_metrics = (*InceptionNetwork.diagnostic_metrics, *diagnostics.RESIDUAL)

  # Widths: Table 1's (k, l, m, n) of Reduction-A, and the other blocks' width fields (none given:
  # the blocks' defaults, which are Inception-ResNet-v2's).
  reduction_a: ClassVar[tuple[int, int, int, int]] = (256, 256, 384, 384)
  block35: ClassVar[Mapping[str, Any]] = {}
  block17: ClassVar[Mapping[str, Any]] = {}
  reduction_b: ClassVar[Mapping[str, Any]] = {}
  block8: ClassVar[Mapping[str, Any]] = {}
  # The released Inception-ResNet-v2 makes its last 8x8 block linear and unscaled, and adds a 1x1
  # conv to 1536 channels before the pool.
  released_end: ClassVar[bool] = False

  @property
  def scales(self) -> tuple[float, float, float]:
    """`residual_scale` as one factor per grid (35x35, 17x17, 8x8)."""
    if isinstance(self.residual_scale, (int, float)):
      return (float(self.residual_scale),) * 3
    scales = tuple(float(s) for s in self.residual_scale)
    if len(scales) != 3:
      raise ConfigError('residual_scale takes one float or three (for the 35x35, 17x17 and 8x8 '
                        f'blocks), got {self.residual_scale!r}.')
    return scales

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """299 -> the 35x35 grid."""
    raise NotImplementedError

  def body(self, x, train):
    ops = self.ops
    s35, s17, s8 = self.scales
    n35, n17, n8 = self.stage_repeats
    x = self.stem(x, train)
    learn = {'learn_scale': True} if self.learn_residual_scale else {}
    x = self.blocks(Block35, numbered('block35', n35), x, train, scope='Repeat', scale=s35,
                    **learn, **self.block35)
    x = ReductionA(ops, *self.reduction_a, name='Mixed_6a')(x, train)
    x = self.blocks(Block17, numbered('block17', n17), x, train, scope='Repeat_1', scale=s17,
                    **learn, **self.block17)
    aux_input = x  # TF-slim PreAuxLogits
    x = ReductionBResidual(ops, **self.reduction_b, name='Mixed_7a')(x, train)
    names = numbered('block8', n8 - 1 if self.released_end else n8)
    x = self.blocks(Block8, names, x, train, scope='Repeat_2', scale=s8, **learn, **self.block8)
    if self.released_end:
      x = Block8(ops, scale=1.0, activation=False, name='Block8', **self.block8)(x, train)
      x = ops.conv(1536, 1, 'Conv2d_7b_1x1')(x, train)
    return x, aux_input


class InceptionResNetV2(InceptionResNet):
  """Inception-ResNet-v2 as released (TF-slim = timm = Keras); the public weights fit it.

  55.8M parameters (with BatchNorm gamma, 1000 classes), 13.2 GMACs at 299x299.
  """
  default_repeats = (10, 20, 10)
  released_end = True

  def stem(self, x, train):
    return Mixed5b(self.ops, name='Mixed_5b')(v3_stem(self, x, train), train)


class InceptionResNetV1(InceptionResNet):
  """Inception-ResNet-v1 per the paper (Figs. 10-15): 5/10/5 blocks, about the cost of
  Inception-v3."""
  default_repeats = (5, 10, 5)
  reduction_a = (192, 192, 256, 384)
  block35 = {'branch_0': 32, 'branch_1': (32, 32), 'branch_2': (32, 32, 32)}
  block17 = {'branch_0': 128, 'branch_1': (128, 128, 128)}
  reduction_b = {'widths': (384, 256, 256), 'tower_2_middle': 256}
  block8 = {'branch_0': 192, 'branch_1': (192, 192, 192)}

  def stem(self, x, train):
    """Fig. 14: 299 -> 35x35x256."""
    x = v3_stem_convs(self, x, train)
    return self.ops.conv(256, 3, 'Conv2d_4b_3x3', 2, 'VALID')(x, train)


class InceptionResNetV2Paper(InceptionResNet):
  """Inception-ResNet-v2 per the paper's schema (Fig. 15, Inception-v4 stem, 5/10/5 blocks).

  See the module docstring for the widths chosen where the paper's figures disagree.
  """
  default_repeats = (5, 10, 5)

  def stem(self, x, train):
    return v4_stem(self, x, train)
