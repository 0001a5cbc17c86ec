"""Seconds to compile one training step (forward, backward, RMSProp update), scanned and unrolled.

The step is the training job's own (`inception_jax.train.train_step` with the paper's recipe).

    python benchmarks/compile_time.py [--model=inception_resnet_v2] [--size=299] [--batch=8] [--json]

Lowering and compiling use shapes only: no parameters are initialised and nothing runs. Each mode is
compiled `--repeats` times in fresh jit wrappers (the compilation cache is off) and the median printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from inception_jax import runtime  # noqa: E402

runtime.start()  # what the training job uses; INCEPTION_JAX_XLA_DEFAULTS=0 measures without

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import default  # noqa: E402
from inception_jax import optim, train  # noqa: E402
from inception_jax.models import create  # noqa: E402


def compile_seconds(name: str, size: int, batch: int, scan: bool, remat: bool) -> float:
  """Lowers and compiles the training job's own train step (`inception_jax.train.train_step`)."""
  config = default.for_model(name)
  config.model.scan_blocks, config.model.remat = scan, remat
  model = create(name, **steps.options_from_config(config, num_classes=1000))
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=1000)
  tx = optim.make_optimizer(config, schedule)
  state = jax.eval_shape(
      lambda: train.create_train_state(train.init_variables(model, (size, size, 3), 0), tx))
  batch = {'image': jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}
  step = functools.partial(train.train_step, model=model, tx=tx, schedule=schedule, config=config)
  start = time.perf_counter()
  jax.jit(step, donate_argnums=0).lower(state, batch).compile()
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
