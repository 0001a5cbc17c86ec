"""Building blocks shared by every Inception network.

The conv unit is TF-slim's: convolution without bias -> BatchNorm -> ReLU. Blocks are written as
towers of layer specs (`Conv`, `Pool`, `Fork`) so that each block's code reads like the paper's
figure, and so that variables land under TF-slim's scopes (`Mixed_5b/Branch_1/Conv2d_0b_3x3/...`):
a checkpoint maps onto our variables name by name.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, Sequence, Union

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from inception_jax.models import diagnostics
from inception_jax.models.conv import NHWC_HWIO, conv_general_dilated

Dtype = Any
Kernel = Union[int, tuple[int, int]]

# TF-slim's inception_arg_scope initialises convolutions with He (fan-in) scaling.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


@functools.lru_cache(maxsize=None)
def _window_counts(size, window, strides, padding) -> np.ndarray:
  """How many input pixels (not padding) each output position of a pool averages, [H, W]."""
  per_axis = []
  for n, w, s, (low, high) in zip(size, window, strides,
                                  lax.padtype_to_pads(size, window, strides, padding)):
    starts = np.arange(0, n + low + high - w + 1, s) - low
    per_axis.append(np.minimum(starts + w, n) - np.maximum(starts, 0))
  return np.outer(*per_axis).astype(np.float32)


def _pair(k: Kernel) -> tuple[int, int]:
  return (k, k) if isinstance(k, int) else tuple(k)


@dataclasses.dataclass(frozen=True)
class Conv:
  """A conv-BN-ReLU unit: `features` output channels, a `kernel` (h, w), a TF-slim scope `name`."""
  features: int
  kernel: Kernel
  name: str
  stride: int = 1
  padding: str = 'SAME'


@dataclasses.dataclass(frozen=True)
class Pool:
  """A max or average pool. SAME average pools leave padded positions out of the mean (TF
  semantics) unless the network's `Ops.avg_pool_include_pad` says otherwise."""
  op: str
  window: int = 3
  stride: int = 1
  padding: str = 'SAME'


@dataclasses.dataclass(frozen=True)
class Fork:
  """Convs applied side by side to one input and concatenated: the split ends of Inception-C
  towers."""
  convs: tuple[Conv, ...]


AVG_POOL_3X3 = Pool('avg', 3, 1, 'SAME')
MAX_POOL_3X3_S2 = Pool('max', 3, 2, 'VALID')


@dataclasses.dataclass(frozen=True)
class Ops:
  """How every layer of one network is built: numerics, BatchNorm settings and the padding policy.

  Attributes:
    dtype: compute dtype; parameters stay float32.
    bn_scale: learn BatchNorm's gamma (TF-slim: no; timm: yes).
    bn_momentum: decay of BatchNorm's moving averages.
    bn_epsilon: BatchNorm's epsilon.
    depth_multiplier: scales every conv's channel count (TF-slim's option), for small variants.
    min_depth: the fewest channels a conv keeps under `depth_multiplier`.
    same_padding: turn every VALID conv and pool of the network body into SAME (small-input mode;
      TF-slim calls this `align_feature_maps`).
    avg_pool_include_pad: count padded zeros in SAME average pools (PyTorch's default, which timm's
      Inception-v3 uses); TF, Keras and the other timm models leave them out.
    bn_folded: apply BatchNorm as one float32 multiply-add per element (`FoldedBatchNorm`): the
      same variables and statistics, other rounding (issue 18's candidate for GPU speed;
      BENCHMARKS.md).
  """
  dtype: Dtype = jnp.float32
  bn_scale: bool = False
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  depth_multiplier: float = 1.0
  min_depth: int = 8
  same_padding: bool = False
  avg_pool_include_pad: bool = False
  bn_folded: bool = False

  def depth(self, channels: int) -> int:
    if self.depth_multiplier == 1.0:
      return channels
    return max(self.min_depth, int(channels * self.depth_multiplier))

  def padding(self, padding: str) -> str:
    return 'SAME' if self.same_padding else padding

  def conv(self, features: int, kernel: Kernel, name: str, stride: int = 1,
           padding: str = 'SAME') -> 'ConvBN':
    """A conv-BN-ReLU module, created in the calling module's scope."""
    return ConvBN(self.depth(features), _pair(kernel), self, stride=stride,
                  padding=self.padding(padding), name=name)

  def pool(self, x: jax.Array, spec: Pool) -> jax.Array:
    window, strides = (spec.window,) * 2, (spec.stride,) * 2
    padding = self.padding(spec.padding)
    if spec.op == 'max':
      # Keywords: jax2onnx (inception_jax/export/onnx.py) patches max_pool with a keyword-only one.
      return nn.max_pool(x, window_shape=window, strides=strides, padding=padding)
    summed = nn.pooling.pool(x, 0.0, lax.add, window, strides, padding)
    if self.avg_pool_include_pad or padding == 'VALID':
      return summed / math.prod(window)
    # Real pixels under each window: a constant of the shapes (flax recounts it on every call).
    counts = _window_counts(x.shape[1:3], window, strides, padding)
    return summed / jnp.asarray(counts, summed.dtype)[None, :, :, None]

  def apply(self, layer: Union[Conv, Pool, Fork], x: jax.Array, train: bool) -> jax.Array:
    if isinstance(layer, Conv):
      conv = self.conv(layer.features, layer.kernel, layer.name, layer.stride, layer.padding)
      return conv(x, train)
    if isinstance(layer, Pool):
      return self.pool(x, layer)
    return jnp.concatenate([self.apply(c, x, train) for c in layer.convs], axis=-1)


class ConvBN(nn.Module):
  """Convolution (no bias) -> BatchNorm -> ReLU, TF-slim's unit.

  Variables: `kernel` (HWIO) and `BatchNorm/{scale, bias, mean, var}`: TF-slim's `weights` and
  `BatchNorm/{gamma, beta, moving_mean, moving_variance}`.
  """
  features: int
  kernel: tuple[int, int]
  ops: Ops
  stride: int = 1
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    shape = (*self.kernel, x.shape[-1], self.features)
    kernel = self.param('kernel', conv_init, shape, jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.ops.dtype)
    y = conv_general_dilated(x, kernel, (self.stride, self.stride), self.padding,
                             dimension_numbers=NHWC_HWIO)
    norm = FoldedBatchNorm if self.ops.bn_folded else nn.BatchNorm
    y = norm(use_running_average=not train, momentum=self.ops.bn_momentum,
             epsilon=self.ops.bn_epsilon, use_scale=self.ops.bn_scale, dtype=self.ops.dtype,
             name='BatchNorm')(y)
    return nn.relu(y)


class FoldedBatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis with its variables (`scale`, `bias`; `batch_stats` `mean`,
  `var`), statistics (one pass in float32: E[x] and E[x^2]) and moving averages, applied as one
  float32 multiply-add per element, `x * a + b`, with the per-channel a = scale / sqrt(var + eps)
  and b = bias - mean * a, then cast to the compute dtype. flax applies `(x - mean) * a + bias`:
  the same to float32 rounding, but folding the mean into `b` rounds `x * a` before the mean is
  taken away, which loses about |mean| / std times float32's precision (BENCHMARKS.md, issue 18).
  The gradients' sums are float32 either way."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    moving_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    moving_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    if self.use_running_average:
      mean, var = moving_mean.value, moving_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      wide = x.astype(jnp.float32)
      mean = jnp.mean(wide, axes)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(wide), axes) - jnp.square(mean))
      if not self.is_initializing():
        moving_mean.value = self.momentum * moving_mean.value + (1 - self.momentum) * mean
        moving_var.value = self.momentum * moving_var.value + (1 - self.momentum) * var
    mul = lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      mul = mul * self.param('scale', nn.initializers.ones, features, jnp.float32)
    shift = self.param('bias', nn.initializers.zeros, features, jnp.float32) - mean * mul
    return (x.astype(jnp.float32) * mul + shift).astype(self.dtype or x.dtype)


class Tower(nn.Module):
  """One branch of a block: its layers in sequence, under the scope `Branch_k`."""
  layers: tuple[Union[Conv, Pool, Fork], ...]
  ops: Ops

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for layer in self.layers:
      x = self.ops.apply(layer, x, train)
    return x


class Mixed(nn.Module):
  """A block of parallel towers whose outputs are concatenated along channels.

  Subclasses describe their towers in `towers()`; residual blocks also override `combine`.
  """
  ops: Ops

  def towers(self) -> Sequence[Sequence[Union[Conv, Pool, Fork]]]:
    raise NotImplementedError

  def combine(self, x: jax.Array, mixed: jax.Array) -> jax.Array:
    del x
    return mixed

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    outs = [Tower(tuple(t), self.ops, name=f'Branch_{i}')(x, train)
            for i, t in enumerate(self.towers())]
    return self.combine(x, jnp.concatenate(outs, axis=-1))

  def step(self, x: jax.Array, train: bool):
    """`__call__` in `nn.scan`'s (carry, output) form."""
    return self(x, train), None


class Residual(Mixed):
  """An Inception-ResNet block: x + scale * up(concat(towers)), then ReLU unless `activation=False`.

  `up` is a 1x1 convolution with bias and no BatchNorm (TF-slim scope `Conv2d_1x1`) that restores
  the input width; the paper puts BatchNorm only on the traditional layers, never on the sum. With
  `learn_scale` the scale is a parameter (`residual_scale`, a scalar) initialised at `scale`, as
  SkipInit and ReZero later did; it is not weight-decayed. Records the block's residual ratio (see
  `diagnostics`) under its `grid`'s name when asked.
  """
  scale: float = 1.0
  activation: bool = True
  learn_scale: bool = False
  grid: ClassVar[str] = ''  # '35x35', '17x17' or '8x8'

  def combine(self, x: jax.Array, mixed: jax.Array) -> jax.Array:
    up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, dtype=self.ops.dtype, kernel_init=conv_init,
                 conv_general_dilated=conv_general_dilated, name='Conv2d_1x1')(mixed)
    scale = self.scale
    if self.learn_scale:
      scale = self.param('residual_scale', nn.initializers.constant(self.scale), (), jnp.float32)
      scale = scale.astype(up.dtype)
    # conv * constant + x, in this order, as timm writes it: onnxruntime folds the scale into the
    # conv and the sum into the next one's only in that order (ConvMulFusion, NCHWc's Sum input).
    branch = up * scale
    diagnostics.record_residual(self, self.grid, x, branch)
    x = branch + x
    return nn.relu(x) if self.activation else x


class AuxHead(nn.Module):
  """TF-slim's auxiliary classifier: avg-pool 5/3, 1x1 conv 128, 5x5 conv 768, dense.

  The 5x5 kernel shrinks to the feature map when the map is smaller, as TF-slim's Inception-v3 does;
  a spatial mean follows so that any input size gives one vector.
  """
  num_classes: int
  ops: Ops
  conv_name: str
  logits_name: str

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    window = (min(5, x.shape[1]), min(5, x.shape[2]))
    x = nn.avg_pool(x, window, (3, 3), 'VALID')
    x = ConvBN(self.ops.depth(128), (1, 1), self.ops, name='Conv2d_1b_1x1')(x, train)
    kernel = (min(5, x.shape[1]), min(5, x.shape[2]))
    x = ConvBN(self.ops.depth(768), kernel, self.ops, padding='VALID',
               name=self.conv_name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.ops.dtype, name=self.logits_name)(x)
