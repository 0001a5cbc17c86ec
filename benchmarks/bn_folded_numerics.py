"""How far `config.model.bn_folded` (BatchNorm as one multiply-add per element) moves a training
step's loss and gradients from flax's BatchNorm: a narrow Inception-ResNet-v2 (depth multiplier
0.25, repeats 2,2,3) in float32 at 75x75, one batch per size; prints one line per batch size.

    JAX_PLATFORMS=cpu python benchmarks/bn_folded_numerics.py [--batches=2,8,32]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_jax.models import create  # noqa: E402

import harness  # noqa: F401  (the repository root on sys.path, the programs' start-up settings)


def loss_and_grads(model, variables, images, labels):
  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, images, train=True,
                            mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return jax.jit(jax.value_and_grad(loss))(variables['params'])


def norm(leaves):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in leaves)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', default='2,8,32')
  args = parser.parse_args()
  options = dict(depth_multiplier=0.25, repeats=(2, 2, 3), num_classes=7, scan_blocks=True)
  plain = create('inception_resnet_v2', **options)
  folded = create('inception_resnet_v2', bn_folded=True, **options)
  for batch in map(int, args.batches.split(',')):
    images = jax.random.uniform(jax.random.key(1), (batch, 75, 75, 3), minval=-1, maxval=1)
    labels = jnp.arange(batch) % 5
    variables = jax.jit(lambda x: plain.init(jax.random.key(0), x))(images)
    loss, grads = loss_and_grads(plain, variables, images, labels)
    loss_f, grads_f = loss_and_grads(folded, variables, images, labels)
    a, b = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_f)
    print(f'batch {batch}: loss {float(loss):.6f}, relative difference '
          f'{abs(float(loss_f - loss)) / abs(float(loss)):.2e}; gradients (norm) '
          f'{norm([x - y for x, y in zip(b, a)]) / norm(a):.2e}', flush=True)


if __name__ == '__main__':
  main()
