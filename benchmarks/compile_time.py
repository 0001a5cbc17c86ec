"""Seconds to compile one training step (forward, backward, RMSProp update), scanned and unrolled.

    python benchmarks/compile_time.py [--model=inception_resnet_v2] [--size=299] [--batch=8] [--json]

Lowering and compiling use shapes only: no parameters are initialised and nothing runs. Each mode is
compiled `--repeats` times in fresh jit wrappers (the compilation cache is off) and the median printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from inception_jax.models import create
from inception_jax.models.summary import abstract_variables, image_spec


def train_step_fn(model, tx):
  def step(variables, opt_state, images, labels):
    def loss_fn(params):
      logits, state = model.apply({**variables, 'params': params}, images, train=True,
                                  mutable=['batch_stats'], rngs={'dropout': jax.random.key(0)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    updates, opt_state = tx.update(grads, opt_state, variables['params'])
    return {'params': optax.apply_updates(variables['params'], updates), **state}, opt_state, loss
  return step


def compile_seconds(name: str, size: int, batch: int, scan: bool, remat: bool) -> float:
  model = create(name, scan_blocks=scan, remat=remat)
  tx = optax.rmsprop(0.045, decay=0.9, eps=1.0, momentum=0.9, eps_in_sqrt=True, initial_scale=1.0)
  variables = abstract_variables(model, size)
  opt_state = jax.eval_shape(tx.init, variables['params'])
  images = image_spec(size, batch)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  start = time.perf_counter()
  jax.jit(train_step_fn(model, tx), donate_argnums=(0, 1)).lower(
      variables, opt_state, images, labels).compile()
  return time.perf_counter() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='inception_resnet_v2')
  parser.add_argument('--size', type=int, default=299)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--modes', default='scan,unrolled',
                      help='comma-separated: scan, unrolled, scan+remat, unrolled+remat')
  parser.add_argument('--json', action='store_true', help='also print one JSON object per mode')
  args = parser.parse_args(argv)
  jax.config.update('jax_enable_compilation_cache', False)

  print(f'{args.model} training step at {args.size}x{args.size}, batch {args.batch}, '
        f'{jax.devices()[0].platform}, {jax.device_count()} device(s)')
  print(f'{"mode":<16}{"median s":>10}  runs')
  results = []
  for mode in args.modes.split(','):
    scan, remat = mode.startswith('scan'), mode.endswith('+remat')
    runs = [compile_seconds(args.model, args.size, args.batch, scan, remat)
            for _ in range(args.repeats)]
    median = statistics.median(runs)
    print(f'{mode:<16}{median:>10.1f}  {", ".join(f"{r:.1f}" for r in runs)}', flush=True)
    results.append(dict(model=args.model, image_size=args.size, batch=args.batch, mode=mode,
                        compile_s=round(median, 2), runs_s=[round(r, 2) for r in runs]))
  if args.json:
    for result in results:
      print(json.dumps(result))


if __name__ == '__main__':
  main()
