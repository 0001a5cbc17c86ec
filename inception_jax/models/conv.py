"""`jax.lax.conv_general_dilated` with a hand-written gradient for the convs of scanned blocks.

JAX's own gradient of a convolution relabels dimensions instead of transposing. XLA:CPU turns such
convolutions back into the layout its fast (Eigen) kernels take, except inside while loops
(`nn.scan`), where they fall to a generic kernel many times slower (BENCHMARKS.md, "What was tried
on the CPU training step", has the measurements). Written with explicit transposes, the gradients
are the same numbers and stay on the fast path.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

# The layouts of every convolution in the networks: NHWC activations, HWIO kernels.
NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None):
  """`jax.lax.conv_general_dilated`, with the hand-written gradient for plain stride-1 NHWC/HWIO
  convolutions on CPU (every conv inside the scanned blocks).

  Other backends and other convolutions use JAX's gradient.
  """
  plain = (tuple(window_strides) == (1, 1) and all(d == 1 for d in (lhs_dilation or ()))
           and all(d == 1 for d in (rhs_dilation or ())) and feature_group_count == 1
           and precision is None and preferred_element_type is None and lhs.ndim == 4
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO)
           and jax.default_backend() == 'cpu')
  if not plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
  return _conv_stride_1(lhs, rhs, tuple(tuple(int(p) for p in pair) for pair in padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_stride_1(x, kernel, pads):
  return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=NHWC_HWIO)


def _conv_stride_1_fwd(x, kernel, pads):
  return _conv_stride_1(x, kernel, pads), (x, kernel)


def _conv_stride_1_bwd(pads, residuals, dy):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = pads
  if (kh, kw) == (1, 1) and pads == ((0, 0), (0, 0)):  # matrix products over the channels
    dx = jnp.einsum('nhwo,io->nhwi', dy, kernel[0, 0])
    return dx, jnp.einsum('nhwi,nhwo->io', x, dy)[None, None]
  # dx: the output gradient convolved with the spatially flipped kernel, in and out swapped.
  flipped = jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3)
  dx = lax.conv_general_dilated(dy, flipped, (1, 1),
                                ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)),
                                dimension_numbers=NHWC_HWIO)
  # dkernel: channels as the batch, the batch as the features, the output gradient as the kernel.
  dk = lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)),
                                (1, 1), pads, dimension_numbers=NHWC_HWIO)
  return dx, jnp.transpose(dk, (1, 2, 0, 3))


_conv_stride_1.defvjp(_conv_stride_1_fwd, _conv_stride_1_bwd)
