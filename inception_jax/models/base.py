"""What every Inception network shares: its options, the input check and the classifier head."""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.errors import ConfigError
from inception_jax.models import diagnostics
from inception_jax.models.layers import AuxHead, Dtype, Mixed, Ops
from inception_jax.models.names import AUX_LOGITS, LOGITS
from inception_jax.models.scan import Stage, repeat

# Options that every layer's `Ops` takes under the same name: their defaults are Ops's.
OPS_OPTIONS = ('dtype', 'bn_scale', 'bn_momentum', 'bn_epsilon', 'depth_multiplier',
               'avg_pool_include_pad', 'bn_folded')


class InceptionNetwork(nn.Module):
  """Base class of the zoo: subclasses build the body in `body()`; this class adds the head.

  Apply as `module.apply(variables, images, train=bool)` with NHWC float images in [-1, 1].
  Returns float32 logits `[batch, num_classes]`, or `(logits, aux_logits)` when `aux_logits` is on,
  or the pooled features `[batch, channels]` when `num_classes` is 0. Intermediate feature maps
  are the outputs of submodules named by TF-slim's scopes: `apply(..., capture_intermediates=True,
  mutable=['intermediates'])` returns them, e.g. `['intermediates']['Mixed_6a']['__call__']`.

  Attributes:
    num_classes: classifier width; 1000 for ImageNet, 1001 for TF-slim heads (class 0 = background),
      0 for a feature extractor without a head.
    dropout_keep: probability of keeping a pre-logits activation during training (paper: 0.8).
    aux_logits: add TF-slim's auxiliary classifier; its logits are returned beside the main ones.
    bn_scale: learn BatchNorm's gamma (TF-slim and Keras: no; timm: yes).
    bn_momentum: decay of BatchNorm's moving averages (TF-slim: 0.9997).
    bn_epsilon: BatchNorm's epsilon (TF-slim: 1e-3).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32, logits come out float32.
    scan_blocks: run each run of identical blocks under `nn.scan` (same function, faster compile).
    remat: recompute each block's activations in the backward pass instead of storing them.
    small_inputs: small-image mode (e.g. CIFAR-10's 32x32): the stem's first two stride-2 stages run
      at stride 1 and every VALID padding becomes SAME. Same variables as the full model.
    depth_multiplier: scales every conv's channel count, for small variants.
    repeats: blocks in each of the three grids (35x35, 17x17, 8x8); None keeps the architecture's.
    avg_pool_include_pad: count padding in the blocks' 3x3 average pools, as PyTorch does by default
      (timm's Inception-v3; needed for its outputs). TF-slim, Keras and timm's other models: no.
    bn_folded: apply BatchNorm as one float32 multiply-add per element (same variables and
      statistics, other rounding; `layers.FoldedBatchNorm`).
  """
  num_classes: int = 1000
  dropout_keep: float = 0.8
  aux_logits: bool = False
  bn_scale: bool = Ops.bn_scale
  bn_momentum: float = Ops.bn_momentum
  bn_epsilon: float = Ops.bn_epsilon
  dtype: Dtype = Ops.dtype
  scan_blocks: bool = False
  remat: bool = False
  small_inputs: bool = False
  depth_multiplier: float = Ops.depth_multiplier
  repeats: Optional[tuple[int, int, int]] = None
  avg_pool_include_pad: bool = Ops.avg_pool_include_pad
  bn_folded: bool = Ops.bn_folded

  default_size: ClassVar[int] = 299
  min_size: ClassVar[int] = 75
  default_repeats: ClassVar[tuple[int, int, int]]
  # TF-slim scope names of the auxiliary head's 5x5 conv and its classifier.
  aux_names: ClassVar[tuple[str, str]] = ('Conv2d_2a_5x5', 'Logits')

  # How each option bears on saved variables: every option is in exactly one of the first three
  # groups (tested). Resuming, `init_from`, `predict` and `convert` all read these.
  # Options that change the variables' tree or shapes: a checkpoint restores only under the same.
  structure_options: ClassVar[tuple[str, ...]] = (
      'num_classes', 'aux_logits', 'bn_scale', 'depth_multiplier', 'repeats', 'scan_blocks')
  # Options under which the same variables compute other outputs: pretrained weights compute what
  # they were trained to only under the values they were trained with.
  numeric_options: ClassVar[tuple[str, ...]] = (
      'avg_pool_include_pad', 'bn_epsilon', 'small_inputs')
  # Options of how the function is computed or trained, not of what it is.
  runtime_options: ClassVar[tuple[str, ...]] = ('dtype', 'remat', 'dropout_keep', 'bn_momentum',
                                                'bn_folded')
  # What a run starting from pretrained variables may change: a new classifier width, an aux head
  # added or left out, the block layout (converted on loading), the small-image stem (same
  # variables, and the point of fine-tuning on small images).
  adaptable_options: ClassVar[tuple[str, ...]] = (
      'num_classes', 'aux_logits', 'scan_blocks', 'small_inputs')
  # What an `apply` with the `diagnostics` collection mutable records (models/diagnostics.py).
  diagnostic_metrics: ClassVar[tuple[str, ...]] = diagnostics.PRE_POOL

  @classmethod
  def kept_from_pretrained(cls) -> tuple[str, ...]:
    """The options pretrained variables bring with them: those that shape them or the function
    they compute (structure and numeric), less what a run starting from them may change."""
    return tuple(k for k in (*cls.structure_options, *cls.numeric_options)
                 if k not in cls.adaptable_options)

  @classmethod
  def classifier_scopes(cls) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Variable paths of the layers whose width is `num_classes`: the classifier and the aux
    head's classifier."""
    return (LOGITS,), (AUX_LOGITS, cls.aux_names[1])

  @property
  def ops(self) -> Ops:
    return Ops(same_padding=self.small_inputs, **{o: getattr(self, o) for o in OPS_OPTIONS})

  @property
  def stem_stride(self) -> int:
    return 1 if self.small_inputs else 2

  def stem_convs(self, x: jax.Array, train: bool) -> jax.Array:
    """The three convs that open every network's stem: 299 -> 147x147x64."""
    ops = self.ops
    x = ops.conv(32, 3, 'Conv2d_1a_3x3', self.stem_stride, 'VALID')(x, train)
    x = ops.conv(32, 3, 'Conv2d_2a_3x3', padding='VALID')(x, train)
    return ops.conv(64, 3, 'Conv2d_2b_3x3')(x, train)

  @property
  def stage_repeats(self) -> tuple[int, int, int]:
    if self.repeats is None:
      return self.default_repeats
    repeats = tuple(self.repeats)
    if len(repeats) != 3 or not all(isinstance(r, int) and r >= 1 for r in repeats):
      raise ConfigError(f'repeats takes three positive block counts (35x35, 17x17 and 8x8 grids), '
                        f'got {self.repeats!r}; the default is {self.default_repeats}.')
    return repeats

  def body(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """Stem and blocks: returns the final feature map and the auxiliary head's input."""
    raise NotImplementedError

  def blocks(self, block: type[Mixed], names: Sequence[str], x: jax.Array, train: bool,
             scope: Optional[str] = None, **fields) -> jax.Array:
    """Applies a run of identical blocks named `names`, inside the scope `scope` when given."""
    fields = dict(ops=self.ops, **fields)
    if scope is None:
      return repeat(block, names, x, train, scan=self.scan_blocks, remat=self.remat, **fields)
    return Stage(block, tuple(names), self.scan_blocks, self.remat, tuple(fields.items()),
                 name=scope)(x, train)

  def check_input(self, shape: Sequence[int]) -> None:
    if len(shape) != 4:
      raise ConfigError(f'{type(self).__name__} takes NHWC images [batch, height, width, '
                        f'channels]; got an array of shape {tuple(shape)}.')
    if self.small_inputs:
      return
    height, width = shape[1], shape[2]
    if height < self.min_size or width < self.min_size:
      raise ConfigError(
          f'{type(self).__name__} needs inputs of at least {self.min_size}x{self.min_size} pixels, '
          f'got {height}x{width}. Resize the images (the pretrained size is '
          f'{self.default_size}x{self.default_size}), or create the model with small_inputs=True '
          'for small images such as CIFAR-10\'s 32x32.')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    self.check_input(images.shape)
    x, aux_input = self.body(images, train)
    diagnostics.record_pre_pool(self, x)
    features = jnp.mean(x, axis=(1, 2))
    if not self.num_classes:
      return features.astype(jnp.float32)
    x = nn.Dropout(rate=1.0 - self.dropout_keep, deterministic=not train, name='Dropout')(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name=LOGITS)(x).astype(jnp.float32)
    if not self.aux_logits:
      return logits
    conv_name, logits_name = self.aux_names
    aux = AuxHead(self.num_classes, self.ops, conv_name, logits_name, name=AUX_LOGITS)(
        aux_input, train)
    return logits, aux.astype(jnp.float32)
