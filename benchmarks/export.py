"""Exported formats on CPU: conversion time, file size, and inference latency in each one's runtime.

    python benchmarks/export.py [--model=inception_resnet_v2] [--batches=1,8] [--runs=10] [--json]

Exports one network (random weights, or `--checkpoint`'s) with `inception_jax.export` to every
format, then times a forward pass at each batch size where a deployment would run it: the
SavedModel in TensorFlow, the float and int8 TFLite models in LiteRT, the ONNX model in
onnxruntime, the StableHLO in JAX (`jax.export.deserialize(...).call` under `jax.jit`), and the
network itself in JAX for reference; with torch and timm installed, timm's own model exported by
`torch.onnx.export` in onnxruntime too. Latency: the median of `--runs` calls after `--warmup`.
Formats whose converter or runtime is not installed are reported as skipped.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inception_jax import startup  # noqa: E402

startup.start()
import jax  # noqa: E402

from inception_jax import checkpoint as ckpt, export  # noqa: E402
from inception_jax.errors import ConfigError  # noqa: E402
from inception_jax.export import record as rec  # noqa: E402


def arguments():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='inception_resnet_v2')
  parser.add_argument('--checkpoint', help='export this checkpoint instead of random weights')
  parser.add_argument('--image_size', type=int, default=None, help='default: the network\'s')
  parser.add_argument('--batches', default='1,8')
  parser.add_argument('--runs', type=int, default=10, help='timed calls; the median is reported')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--formats', default=','.join(export.FORMATS))
  parser.add_argument('--output', help='where to keep the exports (default: a temporary folder)')
  parser.add_argument('--json', action='store_true', help='print one JSON record per row')
  return parser.parse_args()


def random_exportable(name: str, size=None) -> rec.Exportable:
  from inception_jax.models import create, options as model_options
  from inception_jax.predict import label_names
  model = create(name, aux_logits=False)
  size = size or model.default_size
  variables = jax.jit(lambda: model.init(jax.random.key(0), np.zeros((1, size, size, 3),
                                                                     np.float32), train=False))()
  variables = jax.tree_util.tree_map(np.asarray, variables)
  options = json.loads(json.dumps({k: getattr(model, k) for k in model_options(name)},
                                  default=str))
  record = ckpt.ModelRecord(name, options, size, 'imagenet', 'random weights')
  return rec.Exportable(model, variables, record, size, label_names('imagenet', 1000), 'random')


def median_ms(call, images, runs: int, warmup: int) -> float:
  for _ in range(warmup):
    call(images)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    call(images)
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def runners(fmt: str, directory: str):
  """A function images -> logits (numpy) in `fmt`'s own runtime, or the reason it cannot run."""
  if fmt == 'savedmodel':
    from inception_jax import tf_import
    tf = tf_import.tensorflow()
    serve = tf.saved_model.load(directory).signatures['serving_default']
    return lambda x: serve(images=tf.constant(x))['logits'].numpy()
  if fmt.startswith('tflite'):
    if importlib.util.find_spec('ai_edge_litert') is None:
      return 'ai-edge-litert is not installed'
    from ai_edge_litert.interpreter import Interpreter
    interpreters = {}

    def call(x):  # one interpreter per batch size: resizing reallocates its tensors
      if len(x) not in interpreters:
        interpreters[len(x)] = Interpreter(model_path=os.path.join(directory, 'model.tflite'),
                                           num_threads=os.cpu_count()).get_signature_runner()
      return interpreters[len(x)](images=x)['logits']
    return call
  if fmt == 'onnx':
    if importlib.util.find_spec('onnxruntime') is None:
      return 'onnxruntime is not installed'
    import onnxruntime
    session = onnxruntime.InferenceSession(os.path.join(directory, 'model.onnx'),
                                           providers=['CPUExecutionProvider'])
    return lambda x: session.run(['logits'], {'images': x})[0]
  if fmt == 'stablehlo':
    with open(os.path.join(directory, 'model.stablehlo'), 'rb') as f:
      exported = jax.export.deserialize(f.read())
    call = jax.jit(exported.call)
    return lambda x: np.asarray(call(x)['logits'])
  raise ValueError(fmt)


def timm_onnx(name: str, size: int, directory: str):
  """timm's model exported by torch.onnx.export: (file, runner), or the reason it cannot run."""
  missing = [m for m in ('torch', 'timm', 'onnxruntime') if importlib.util.find_spec(m) is None]
  if missing:
    return f'{" and ".join(missing)} not installed'
  import onnxruntime
  import timm
  import torch
  model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
  file = os.path.join(directory, 'timm.onnx')
  torch.onnx.export(model, torch.zeros(1, 3, size, size), file, input_names=['images'],
                    output_names=['logits'], dynamic_axes={'images': {0: 'N'}})
  session = onnxruntime.InferenceSession(file, providers=['CPUExecutionProvider'])
  return file, lambda x: session.run(['logits'], {'images': x.transpose(0, 3, 1, 2).copy()})[0]


def size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 2**20
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files) / 2**20


def main():
  args = arguments()
  batches = [int(b) for b in args.batches.split(',')]
  formats = export.parse_formats(args.formats.split(','))
  output = args.output or tempfile.mkdtemp(prefix='inception_jax_export_bench_')
  exportable = (rec.load(args.checkpoint) if args.checkpoint
                else random_exportable(args.model, args.image_size))
  size = exportable.image_size
  images = {b: np.random.default_rng(b).uniform(-1, 1, (b, size, size, 3)).astype(np.float32)
            for b in batches}
  rows = []

  def row(name, file, seconds, call):
    latency = {b: median_ms(call, images[b], args.runs, args.warmup) for b in batches}
    rows.append({'format': name, 'file_mb': round(size_mb(file), 1) if file else None,
                 'convert_s': round(seconds, 1) if seconds is not None else None,
                 **{f'batch{b}_ms': round(latency[b], 2) for b in batches}})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

  logits = jax.jit(exportable.logits_fn())
  row('jax (the network)', None, None, lambda x: np.asarray(logits(x)))
  from inception_jax.export import onnx as onnx_format, savedmodel, stablehlo, tflite
  for fmt in formats:
    directory = os.path.join(output, fmt)
    start = time.perf_counter()
    try:
      if fmt == 'savedmodel':
        savedmodel.export(exportable, directory)
      elif fmt.startswith('tflite'):
        source = os.path.join(output, 'savedmodel')
        if not os.path.exists(source):
          savedmodel.export(exportable, source)
        tflite.export(exportable, directory, source, int8=fmt == 'tflite_int8')
      elif fmt == 'onnx':
        onnx_format.export(exportable, directory)
      else:
        stablehlo.export(exportable, directory)
    except ConfigError as e:
      print(f'{fmt}: skipped ({e})', file=sys.stderr)
      continue
    seconds = time.perf_counter() - start
    call = runners(fmt, directory)
    if isinstance(call, str):
      print(f'{fmt}: exported, not timed ({call})', file=sys.stderr)
      continue
    row(fmt, directory if fmt == 'savedmodel' else _file(directory), seconds, call)
  timm = timm_onnx(exportable.record.model, size, output)
  if isinstance(timm, str):
    print(f'timm ONNX: skipped ({timm})', file=sys.stderr)
  else:
    row('timm onnx (torch.onnx.export)', timm[0], None, timm[1])

  print(table(rows, batches))
  if args.json:
    for r in rows:
      print(json.dumps(r))


def _file(directory: str) -> str:
  record = ckpt.ModelRecord.read(directory, step_dirs=False)
  return os.path.join(directory, record.export['file'])


def table(rows, batches) -> str:
  header = f'{"format":<30} {"file MB":>8} {"convert s":>9}' + ''.join(
      f' {f"batch {b} ms":>11}' for b in batches)
  lines = [header]
  for r in rows:
    file = '' if r['file_mb'] is None else f'{r["file_mb"]:.1f}'
    convert = '' if r['convert_s'] is None else f'{r["convert_s"]:.1f}'
    lines.append(f'{r["format"]:<30} {file:>8} {convert:>9}' + ''.join(
        f' {r[f"batch{b}_ms"]:>11.2f}' for b in batches))
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
