"""Training-preprocessing throughput of the input pipeline, in images per second per CPU core.

    python benchmarks/input_pipeline.py [--images=512] [--image_size=299] [--runs=5] [--json]

Generates ImageNet-like JPEGs (500x375, smooth random content, quality 90) once into memory, then
streams them through the real training pipeline (`EncodedSource`: index-based reads, fused JPEG
decode-and-crop with the Inception distorted box, flip, bilinear resize to --image_size,
batching) and reports the median over --runs of images/s divided by the cores tf.data may use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from inception_jax import runtime  # noqa: E402

runtime.start()  # the settings every program starts with

from inception_jax.data.encoded import EncodedSource  # noqa: E402

tf = runtime.tensorflow()


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  jpegs = []
  for _ in range(count):
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image = tf.image.resize(small[None].astype(np.float32), (375, 500), method='bicubic')[0]
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    jpegs.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return jpegs


def source_over(jpegs: list[bytes], size: int, batch: int) -> EncodedSource:
  encoded = np.asarray(jpegs, dtype=object)
  labels = np.arange(len(jpegs)) % 1000

  def read(indices):
    return encoded[indices], labels[indices], np.ones(len(indices))

  return EncodedSource(name='benchmark', read_train=read, read_eval=read, train_size=len(jpegs),
                       eval_size=len(jpegs),
                       num_classes=1000, image_size=size, global_batch_size=batch,
                       eval_batch_size=batch)


def images_per_second(source: EncodedSource, steps: int) -> float:
  batches = source.train_batches(0)
  next(batches)  # start-up (tracing, thread pools) is not throughput
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * source.global_batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=512, help='distinct JPEGs generated')
  parser.add_argument('--image_size', type=int, default=299)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args(argv)

  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  jpegs = make_jpegs(args.images)
  source = source_over(jpegs, args.image_size, args.batch)
  steps = max(1, source.steps_per_epoch - 1)
  runs = [images_per_second(source, steps) for _ in range(args.runs)]
  median = statistics.median(runs)
  size = args.image_size
  print(f'training preprocessing at {size}x{size}: {median:.0f} img/s on {cores} cores = '
        f'{median / cores:.0f} img/s/core (median of {args.runs}: '
        f'{", ".join(f"{r:.0f}" for r in runs)})')
  if args.json:
    print(json.dumps({'image_size': size, 'cores': cores, 'img_per_sec': round(median, 1),
                      'img_per_sec_per_core': round(median / cores, 1),
                      'runs': [round(r, 1) for r in runs]}))


if __name__ == '__main__':
  main()
