"""Seconds to compile one training step (forward, backward, RMSProp update), scanned and unrolled.

The step is the training job's own (`inception_jax.steps.train_step` with the paper's recipe).

    python benchmarks/compile_time.py [--model=inception_resnet_v2] [--image_size=299] [--batch=8] \
        [--runs=3] [--modes=scan,unrolled] [--json]

Lowering and compiling use shapes only: no parameters are initialised and nothing runs. Each mode is
compiled `--runs` times in fresh jit wrappers (the compilation cache is off) and the median printed.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp

import harness  # puts the repository on sys.path and runs startup.start() before JAX starts


def compile_seconds(args, scan: bool, remat: bool) -> float:
  """Lowers and compiles the training job's own train step for `args`' model, size and batch."""
  model, config = harness.model_and_config(args, scan_blocks=scan, remat=remat)
  step, init = harness.training(model, config, args.image_size)
  size = args.image_size
  batch = {'image': jax.ShapeDtypeStruct((args.batch, size, size, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((args.batch,), jnp.int32)}
  return harness.compile_timed(step, jax.eval_shape(init), batch)[1]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  harness.add_model_arguments(parser)
  parser.add_argument('--image_size', type=int, default=299)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--runs', type=int, default=3, help='compilations per mode (median shown)')
  parser.add_argument('--modes', default='scan,unrolled',
                      help='comma-separated: scan, unrolled, scan+remat, unrolled+remat')
  parser.add_argument('--json', action='store_true', help='also print one JSON object per mode')
  args = parser.parse_args(argv)
  jax.config.update('jax_enable_compilation_cache', False)

  print(f'{args.model} training step at {args.image_size}x{args.image_size}, batch {args.batch}, '
        f'{jax.devices()[0].platform}, {jax.device_count()} device(s)')
  print(f'{"mode":<16}{"median s":>10}  runs')
  results = []
  for mode in args.modes.split(','):
    scan, remat = mode.startswith('scan'), mode.endswith('+remat')
    runs = [compile_seconds(args, scan, remat) for _ in range(args.runs)]
    median = statistics.median(runs)
    print(f'{mode:<16}{median:>10.1f}  {", ".join(f"{r:.1f}" for r in runs)}', flush=True)
    results.append(dict(model=args.model, image_size=args.image_size, batch=args.batch, mode=mode,
                        compile_s=round(median, 2), runs_s=[round(r, 2) for r in runs]))
  if args.json:
    for result in results:
      print(json.dumps(result))


if __name__ == '__main__':
  main()
