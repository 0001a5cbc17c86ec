"""Evaluation throughput per crop protocol: images/s of `inception_jax.evaluate` with 1, 10, 12 or
144 crops per image, and the host's share of the work.

    python benchmarks/evaluate.py --model=inception_resnet_v2 [--image_size=299] \
        [--protocols=1,10,12,144] [--images=4] [--runs=3] [--dtype=bfloat16] [--json]

Nothing is downloaded. In a temporary directory: the network with random weights, written with
`inception_jax.checkpoint.save_variables` and a `model.json` for two classes, and a folder dataset
(`folder:PATH`) whose val split holds --images ImageNet-like JPEGs (500x375, as in
input_pipeline.py). Per protocol, one untimed call of `inception_jax.evaluate.evaluate` (the
command's own code path: checkpoint read, tf.data decode and crops, jitted forward passes, top-k
counts), then --runs timed calls. Reported, as medians over the runs:

- img/s: images per second over the batches after each call's first one (the first also pays for
  tracing, compiling and starting the input pipeline): the rate of a long evaluation. crops/s is the
  same in forward passes. The batches are timed where the evaluator receives them, by wrapping
  `evaluate.crop_batches`, which yields the same batches as before.
- s/run: the whole call, and overhead: the part of it that the images at that rate do not explain
  (reading the checkpoint, building the source and pipeline, tracing and compiling: `evaluate()`
  compiles its forward pass on every call).
- host ms/image: the evaluator's per-image tf.data work for the protocol (`crops.crop_fn`: JPEG
  decode and crops) in a tf.function, one image at a time; and of that, `crops.crops` alone on the
  decoded image (protocols 10, 12, 144). With C cores free for tf.data the host keeps up with at
  most C x 1000 / host_ms images/s: above the network's img/s, the network is the bottleneck.

Batches: the command's default (about 128 crops per forward pass), capped at half of --images so
that every call has batches after its first, and lowered to a divisor of --images so that no batch
is padded; --batch_size overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from typing import Any, Optional

import input_pipeline  # the ImageNet-like JPEGs
import jax
import numpy as np

from inception_jax import checkpoint as ckpt, evaluate, steps, tf_import
from inception_jax.data import crops
from inception_jax.errors import ConfigError
from inception_jax.models import create, model_class

import harness  # puts the repository on sys.path and runs startup.start() before JAX starts

tf = tf_import.tensorflow()

CLASSES = ['class0', 'class1']


def arguments(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  harness.add_model_arguments(parser)
  parser.add_argument('--image_size', type=int, default=None,
                      help="the network's input size (default: the model's, 299 for most)")
  parser.add_argument('--protocols', default='1,10,12,144',
                      help=f'crops per image, of {", ".join(map(str, evaluate.PROTOCOLS))}')
  parser.add_argument('--images', type=int, default=4,
                      help='images evaluated per timed run (144 crops of 4 images: about 2 '
                           'minutes a run for the full Inception-ResNet-v2 on 2 CPU cores)')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='images per batch (default: see above)')
  parser.add_argument('--runs', type=int, default=3, help='timed runs; the median is reported')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--json', action='store_true',
                      help='end with one JSON object per protocol')
  args = parser.parse_args(argv)
  try:
    args.protocols = evaluate.parse_protocols(args.protocols.split(','))
  except ConfigError as e:
    parser.error(str(e).replace('--crops', '--protocols'))
  args.image_size = args.image_size or model_class(args.model).default_size
  devices = jax.device_count()
  for protocol in args.protocols:
    batch = batch_size(protocol, args.images, devices, args.batch_size)
    if args.images < 2 * batch or batch % devices:
      parser.error(f'--images={args.images} with {batch} images per batch (protocol {protocol}) '
                   f'on {devices} device(s): each run needs at least two batches, of a multiple '
                   'of the devices; pass more --images or a smaller --batch_size.')
  return args


def batch_size(protocol: int, images: int, devices: int, requested: Optional[int]) -> int:
  """Images per batch for `protocol`: `requested`, else `evaluate.evaluate`'s default for one
  protocol capped at images // 2 and lowered to a divisor of `images` (a multiple of devices)."""
  if requested:
    return requested
  default = max(devices, 128 // protocol // devices * devices)  # as evaluate.evaluate chooses
  cap = max(devices, min(default, images // 2) // devices * devices)
  dividing = [b for b in range(devices, cap + 1, devices) if images % b == 0]
  return max(dividing) if dividing else cap


def write_checkpoint(args, directory: str) -> str:
  """`args`' network with random weights for two classes, as `inception_jax.convert` or a
  training workdir would leave it: variables and `model.json`."""
  _, config = harness.model_and_config(args, dtype=args.dtype)
  options = json.loads(json.dumps(steps.options_from_config(config, len(CLASSES)), default=str))
  record = ckpt.ModelRecord(args.model, options, args.image_size, CLASSES,
                            'random weights (benchmarks/evaluate.py)')
  model = create(args.model, **record.resolved_options())
  shape = (args.image_size, args.image_size, 3)
  # The network's own initialisers, compiled without XLA's optimisations (it runs once): the same
  # values, set up sooner.
  init = jax.jit(lambda: steps.init_variables(model, shape, 0)).lower().compile(
      {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True})
  variables = jax.device_get(init())
  path = os.path.join(directory, 'network')
  ckpt.save_variables(path, variables, record)
  return path


def write_folder(jpegs: list[bytes], directory: str) -> str:
  """`folder:` layout: one training image per class (the folder's classes come from train/) and
  the JPEGs in val/, the classes taking turns."""
  root = os.path.join(directory, 'images')
  for split, files in (('train', jpegs[:len(CLASSES)]), ('val', jpegs)):
    for i, data in enumerate(files):
      class_dir = os.path.join(root, split, CLASSES[i % len(CLASSES)])
      os.makedirs(class_dir, exist_ok=True)
      with open(os.path.join(class_dir, f'{i:05d}.jpg'), 'wb') as f:
        f.write(data)
  return root


@contextlib.contextmanager
def batch_marks():
  """While open, `evaluate.evaluate` runs unchanged, and the list it yields gets, for each batch,
  the time at which the evaluator asked for it (so was done with the one before) and its valid
  images, then the time it was done with the last one (with 0 images)."""
  marks: list[tuple[float, float]] = []
  original = evaluate.crop_batches

  def observed(*args, **kwargs):
    batches = iter(original(*args, **kwargs))
    while True:
      asked = time.perf_counter()
      batch = next(batches, None)
      marks.append((asked, 0.0 if batch is None else float(np.sum(batch[2]))))
      if batch is None:
        return
      yield batch

  evaluate.crop_batches = observed
  try:
    yield marks
  finally:
    evaluate.crop_batches = original


def timed_call(checkpoint: str, dataset: str, protocol: int, batch: int) -> tuple[float, float]:
  """(seconds of one `evaluate.evaluate` call, images/s over its batches after the first, from
  the moment it was done with the first to the moment it was done with the last)."""
  with batch_marks() as marks:
    start = time.perf_counter()
    [record] = evaluate.evaluate([checkpoint], [protocol], dataset=dataset, batch_size=batch,
                                 progress=False)
    seconds = time.perf_counter() - start
  assert record['images'] == sum(n for _, n in marks), (record, marks)
  return seconds, sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[1][0])


def host_milliseconds(jpegs: list[bytes], protocol: int, size: int, repeats: int,
                      ) -> tuple[float, Optional[float]]:
  """Median ms per image of the evaluator's per-image host work for `protocol` (decode and crops),
  and of `crops.crops` alone on the decoded image (None for the single crop)."""
  key = crops.crop_key(protocol, size)
  make = crops.crop_fn([protocol], [size], encoded=True)
  per_image = tf.function(lambda data: make(data, 0, 1.0)[0][key],
                          input_signature=[tf.TensorSpec([], tf.string)])
  work = [(per_image, [tf.constant(data) for data in jpegs])]
  if protocol != 1:
    crop = tf.function(lambda image: crops.crops(image, protocol, size),
                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    work.append((crop, [tf.io.decode_jpeg(data, channels=3) for data in jpegs]))
  medians = []
  for fn, inputs in work:
    fn(inputs[0])  # traces
    times = []
    for _ in range(repeats):
      for x in inputs:
        start = time.perf_counter()
        fn(x)  # eager TensorFlow on the CPU returns when the work is done
        times.append(1000 * (time.perf_counter() - start))
    medians.append(statistics.median(times))
  return medians[0], (medians[1] if len(medians) > 1 else None)


def measure(args) -> list[dict[str, Any]]:
  devices = jax.device_count()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  jpegs = input_pipeline.make_jpegs(args.images)
  results = []
  with tempfile.TemporaryDirectory() as directory:
    checkpoint = write_checkpoint(args, directory)
    dataset = f'folder:{write_folder(jpegs, directory)}'
    for protocol in args.protocols:
      batch = batch_size(protocol, args.images, devices, args.batch_size)
      timed_call(checkpoint, dataset, protocol, batch)  # warm-up
      runs = [timed_call(checkpoint, dataset, protocol, batch) for _ in range(args.runs)]
      seconds = statistics.median(s for s, _ in runs)
      rate = statistics.median(r for _, r in runs)
      host_ms, crop_ms = host_milliseconds(jpegs, protocol, args.image_size,
                                           repeats=max(3, args.runs))
      per_image = 1 if protocol == 1 else crops.count(protocol)
      results.append({
          'model': args.model, 'image_size': args.image_size, 'dtype': args.dtype,
          'crops': protocol, 'images': args.images, 'batch': batch,
          'crops_per_batch': batch * per_image,
          'img_per_s': round(rate, 3), 'runs_img_per_s': [round(r, 3) for _, r in runs],
          'crops_per_s': round(rate * per_image, 2),
          'seconds_per_run': round(seconds, 2), 'runs_s': [round(s, 2) for s, _ in runs],
          'call_img_per_s': round(args.images / seconds, 3),
          'overhead_s': round(seconds - args.images / rate, 2),
          'host_ms_per_image': round(host_ms, 2),
          'crop_ms_per_image': None if crop_ms is None else round(crop_ms, 2),
          'device': jax.devices()[0].device_kind, 'device_count': devices, 'cores': cores,
          'depth_multiplier': args.depth_multiplier, 'repeats': args.repeats,
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax': jax.__version__})
  return results


def report(results: list[dict[str, Any]], as_json: bool) -> None:
  first = results[0]
  size = f'{first["image_size"]}x{first["image_size"]}'
  print(f'{first["model"]} evaluation, {size}, {first["dtype"]}, on {first["device_count"]} '
        f'{first["device"]} device(s), {first["cores"]} cores; {first["images"]} images a run, '
        f'medians of {len(first["runs_s"])} runs')
  print(f'{"crops":>5} {"batch":>5} {"img/s":>8} {"crops/s":>8} {"s/run":>7} {"overhead s":>10} '
        f'{"host ms/image":>13} {"(crops alone)":>13}  img/s of the runs')
  for r in results:
    crop_ms = '' if r['crop_ms_per_image'] is None else f'{r["crop_ms_per_image"]:.1f}'
    print(f'{r["crops"]:>5} {r["batch"]:>5} {r["img_per_s"]:>8.3g} {r["crops_per_s"]:>8.1f} '
          f'{r["seconds_per_run"]:>7.1f} {r["overhead_s"]:>10.1f} {r["host_ms_per_image"]:>13.1f} '
          f'{crop_ms:>13}  {", ".join(f"{x:.3g}" for x in r["runs_img_per_s"])}')
  if as_json:
    for r in results:
      print(json.dumps(r))


def main(argv=None) -> None:
  args = arguments(argv)
  report(measure(args), args.json)


if __name__ == '__main__':
  main()
