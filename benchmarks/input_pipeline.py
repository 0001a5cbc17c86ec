"""Throughput of the input pipeline: training preprocessing in images per second per CPU core,
and the training job's own input stream from prepared data on local disk or in a bucket.

    python benchmarks/input_pipeline.py [--images=512] [--image_size=299] [--runs=5] [--json]

Generates ImageNet-like JPEGs (500x375, smooth random content, quality 90) once into memory, then
streams them through the real training pipeline (`EncodedSource`: index-based reads, fused JPEG
decode-and-crop with the Inception distorted box, flip, bilinear resize to --image_size,
batching) and reports the median over --runs of images/s divided by the cores tf.data may use.

    python benchmarks/input_pipeline.py --data_dir=DIR [--data_dir=gs://...] [--emulate]
        [--latency_ms=30] [--make_data --images=2048 --shards=8] [--readers=batched,one_by_one]

streams the training batches of `imagenet2012` prepared in each --data_dir (`create_source`, as
the job does: TFDS's ArrayRecord files read by index) and reports images/s for each, the
directories measured in turn, --runs times (medians). --make_data first prepares fake ImageNet
(--images JPEGs of ~95 KB over 10 classes, --shards files) in a local --data_dir that lacks it.
--emulate starts fake-gcs-server behind a proxy that holds each request for --latency_ms (as a
real bucket's round trip; benchmarks/gcs_proxy.py), copies the first local --data_dir into it and
measures it there too. --readers=one_by_one measures reading a batch's records one at a time (the
reader before batched reads) beside the job's reader (batched).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from typing import Iterator

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from inception_jax import startup  # noqa: E402

startup.start()  # the settings every program starts with

from inception_jax import imagenet, prepare, tf_import, workdir  # noqa: E402
from inception_jax.data import create_source, tfds_sources  # noqa: E402
from inception_jax.data.encoded import EncodedSource  # noqa: E402

tf = tf_import.tensorflow()
CLASSES = 10  # of the fake ImageNet (--make_data)
BUCKET_DIR = 'gs://input-benchmark/data'  # where --emulate copies the data


def jpegs(count: int, seed: int = 0, detail: tuple[int, int] = (24, 32),
          size: tuple[int, int] = (375, 500)) -> Iterator[bytes]:
  """`count` JPEGs of `size`: random `detail` pixels, bicubic-upsampled (finer detail, larger
  files: (24, 32) gives ~40 KB at 500x375, (96, 128) ~95 KB, ImageNet's average ~110 KB)."""
  rng = np.random.default_rng(seed)
  for _ in range(count):
    small = rng.integers(0, 256, (*detail, 3), dtype=np.uint8)
    image = tf.image.resize(small[None].astype(np.float32), size, method='bicubic')[0]
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    yield tf.io.encode_jpeg(image, quality=90).numpy()


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
  return list(jpegs(count, seed))


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


def write_ilsvrc(manual_dir: str, images: int, **jpeg_args) -> None:
  """ILSVRC2012_img_train.tar (a tar per class of `images` JPEGs over CLASSES classes) and
  ILSVRC2012_img_val.tar (10 JPEGs), as image-net.org serves them."""
  stream = jpegs(images + 10, **jpeg_args)
  with tarfile.open(os.path.join(manual_dir, prepare.IMAGENET_TRAIN), 'w') as archive:
    for c, wnid in enumerate(imagenet.wnids()[:CLASSES]):
      class_tar = io.BytesIO()
      with tarfile.open(fileobj=class_tar, mode='w') as inner:
        for j in range(c, images, CLASSES):
          _add(inner, f'{wnid}_{j}.JPEG', next(stream))
      _add(archive, f'{wnid}.tar', class_tar.getvalue())
  with tarfile.open(os.path.join(manual_dir, prepare.IMAGENET_VAL), 'w') as archive:
    for i in range(1, 11):
      _add(archive, f'ILSVRC2012_val_{i:08d}.JPEG', next(stream))


def prepare_fake_imagenet(data_dir: str, images: int, shards: int, detail=(96, 128),
                          size=(375, 500)) -> None:
  """Prepares a fake `imagenet2012` of `images` training JPEGs (see `jpegs`) in `data_dir`, as
  `python -m inception_jax.prepare` does but with `shards` files a split, unless it is there."""
  import tensorflow_datasets as tfds
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  if builder.is_prepared():
    return
  with tempfile.TemporaryDirectory() as manual_dir:
    write_ilsvrc(manual_dir, images, detail=detail, size=size)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False,
                                          num_shards=shards)
    with prepare.quiet_tfds():
      builder.download_and_prepare(download_dir=os.path.join(manual_dir, 'downloads'),
                                   download_config=config, file_format=prepare.ARRAY_RECORD)


class OneByOne:
  """A data source whose batched read fetches the records one at a time: the job's reader
  before it read a batch at once."""

  def __init__(self, records):
    self.records = records

  def __getitems__(self, keys):
    return [self.records[k] for k in keys]


def stream_source(data_dir: str, image_size: int, batch: int, reader: str) -> EncodedSource:
  """The job's source of `imagenet2012` in `data_dir` (`create_source`), read by `reader`:
  'batched' (the job's) or 'one_by_one' (`OneByOne`)."""
  from configs import default
  config = default.get_config().dataset
  config.data_dir, config.image_size = data_dir, image_size
  source = create_source(config, batch_size=batch, eval_batch_size=batch, seed=0)
  if reader == 'one_by_one':
    records = tfds_sources._data_source('imagenet2012', 'train', data_dir)  # noqa: SLF001
    source.read_train = tfds_sources._reader(OneByOne(records))  # noqa: SLF001
  return source


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


def measure_streams(args, cores: int) -> None:
  """--data_dir: the job's training stream from each directory (and from the emulated bucket at
  each --latency_ms), each configuration in turn, --runs times."""
  dirs, readers = list(args.data_dir), args.readers.split(',')
  latencies = [float(ms) for ms in args.latency_ms.split(',')] if args.emulate else [None]
  local = [d for d in dirs if not workdir.is_remote(d)]
  if args.make_data:
    for d in local:
      prepare_fake_imagenet(d, args.images, args.shards)
  emulated = None
  try:
    if args.emulate:
      import gcs_proxy
      emulated = gcs_proxy.Emulated()
      emulated.upload(local[0], BUCKET_DIR)
      dirs.append(BUCKET_DIR)
    # (data_dir, reader, the proxy's latency in ms: None where no request goes through it)
    configurations = [(d, r, ms if d == BUCKET_DIR else None)
                      for d in dirs for r in readers for ms in (latencies if d == BUCKET_DIR
                                                                 else [None])]
    sources = {(d, r): stream_source(d, args.image_size, args.batch, r)
               for d in dirs for r in readers}
    steps = args.steps or max(1, min(s.steps_per_epoch for s in sources.values()) - 1)
    runs = {c: [] for c in configurations}
    for _ in range(args.runs):  # interleaved: the machine's load falls on all alike
      for d, reader, ms in configurations:
        if ms is not None:
          emulated.proxy.latency_s = ms / 1000
        runs[d, reader, ms].append(images_per_second(sources[d, reader], steps))
  finally:
    if emulated:
      emulated.stop()
  streams = []
  for (d, reader, ms), values in runs.items():
    median = statistics.median(values)
    streams.append({'data_dir': d, 'bucket': workdir.is_remote(d), 'reader': reader,
                    'latency_ms': ms, 'img_per_sec': round(median, 1),
                    'runs': [round(r, 1) for r in values]})
    latency = '' if ms is None else f', {ms:g} ms a request'
    print(f'{d} ({reader} reads{latency}): {median:.0f} img/s (median of {args.runs}: '
          f'{", ".join(f"{r:.0f}" for r in values)})')
  ratios = {}
  for s in streams:
    locally = [t['img_per_sec'] for t in streams if t['reader'] == s['reader'] and not t['bucket']]
    if s['bucket'] and locally:
      name = f'{s["reader"]}' + ('' if s['latency_ms'] is None else f'@{s["latency_ms"]:g}ms')
      ratios[name] = round(s['img_per_sec'] / locally[0], 3)
      print(f'bucket / local ({name}): {ratios[name]:.2f}')
  if args.json:
    print(json.dumps({'image_size': args.image_size, 'batch': args.batch, 'steps': steps,
                      'cores': cores, 'streams': streams, 'bucket_over_local': ratios}))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=512,
                      help='distinct JPEGs generated (with --make_data: training images)')
  parser.add_argument('--image_size', type=int, default=299)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--data_dir', action='append', default=[],
                      help='a TFDS data directory holding imagenet2012 (local or gs://); '
                           'repeat to compare')
  parser.add_argument('--make_data', action='store_true',
                      help='prepare fake imagenet2012 in the local --data_dir first if absent')
  parser.add_argument('--shards', type=int, default=8, help='with --make_data: files a split')
  parser.add_argument('--emulate', action='store_true',
                      help='measure the first local --data_dir from an emulated bucket too')
  parser.add_argument('--latency_ms', default='30',
                      help='with --emulate: how long each request to the bucket is held, in ms; '
                           'a list (0,30) measures each')
  parser.add_argument('--readers', default='batched', help='batched, one_by_one or both')
  parser.add_argument('--steps', type=int, help='batches timed a run (default: an epoch)')
  args = parser.parse_args(argv)
  if args.emulate and all(workdir.is_remote(d) for d in args.data_dir):
    parser.error('--emulate copies the first local --data_dir into the bucket: give one')
  if not set(args.readers.split(',')) <= {'batched', 'one_by_one'}:
    parser.error(f'--readers: batched, one_by_one or both, not {args.readers}')

  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  if args.data_dir:
    measure_streams(args, cores)
    return
  source = source_over(make_jpegs(args.images), args.image_size, args.batch)
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
