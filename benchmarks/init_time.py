"""Seconds from a fresh Python to a network's variables: eager `model.init`, jitted, jitted with
scanned blocks, each with JAX's compilation cache empty (a first start) and filled (a second).

    python benchmarks/init_time.py [--model=inception_resnet_v2] [--size=299] [--runs=3] \
        [--modes=eager,jit,jit+scan] [--json]  [--depth_multiplier=1.0] [--repeats=...]

Each measurement is a new process (`--child`) that imports inception_jax (its start-up settings,
compilation cache included) and times `model.init` on one image to the variables being ready; its
imports are not counted. Per mode and run, a new cache directory: the first process fills it
("cold"), a second one reads it ("warm"). Medians over `--runs`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (inception_jax's settings, its cache where JAX_COMPILATION_CACHE_DIR is set)

MODES = ('eager', 'jit', 'jit+scan')


def child(args, mode: str) -> None:
  import time

  import jax
  import numpy as np

  model, _ = harness.model_and_config(args, scan_blocks=mode.endswith('+scan'))
  images = np.zeros((1, args.size, args.size, 3), np.float32)
  init = model.init if mode == 'eager' else jax.jit(model.init, static_argnames='train')
  start = time.perf_counter()
  jax.block_until_ready(init(jax.random.key(0), images, train=False))
  print(json.dumps({'seconds': time.perf_counter() - start}))


def measure(args, mode: str, cache: str) -> float:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
  command = [sys.executable, __file__, '--child', f'--model={args.model}', f'--size={args.size}',
             f'--modes={mode}', f'--depth_multiplier={args.depth_multiplier}']
  if args.repeats:
    command.append(f'--repeats={args.repeats}')
  out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])['seconds']


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  harness.add_model_arguments(parser)
  parser.add_argument('--size', type=int, default=299)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--modes', default=','.join(MODES))
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  modes = args.modes.split(',')
  unknown = [m for m in modes if m not in MODES]
  if unknown:
    parser.error(f'--modes: unknown {", ".join(unknown)}; choose from {", ".join(MODES)}.')
  if args.child:
    child(args, modes[0])
    return
  print(f'{args.model} at {args.size}x{args.size}: seconds to the variables, median of '
        f'{args.runs} (runs in brackets)')
  print(f'{"mode":<10}{"cold cache":>12}{"warm cache":>12}')
  records = []
  for mode in modes:
    cold, warm = [], []
    for _ in range(args.runs):
      with tempfile.TemporaryDirectory() as cache:
        cold.append(measure(args, mode, cache))
        warm.append(measure(args, mode, cache))
    record = {'model': args.model, 'size': args.size, 'mode': mode,
              'cold_s': statistics.median(cold), 'warm_s': statistics.median(warm),
              'runs_cold_s': cold, 'runs_warm_s': warm}
    records.append(record)
    print(f'{mode:<10}{record["cold_s"]:>12.1f}{record["warm_s"]:>12.1f}   '
          f'({", ".join(f"{c:.1f}" for c in cold)} / {", ".join(f"{w:.1f}" for w in warm)})',
          flush=True)
  if args.json:
    for record in records:
      print(json.dumps(record))


if __name__ == '__main__':
  main()
