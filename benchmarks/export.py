"""Exported formats on CPU: conversion time, file size, and inference latency in each one's runtime.

    python benchmarks/export.py [--model=inception_resnet_v2] [--batches=1,8] [--runs=10] [--json]

Exports one network (random weights, or `--checkpoint`'s) with `inception_jax.export` to every
format, then times a forward pass at each batch size where a deployment would run it: the
SavedModel in TensorFlow, the float and int8 TFLite models in LiteRT, the ONNX model in
onnxruntime, the StableHLO in JAX (`jax.export.deserialize(...).call` under `jax.jit`), and the
network itself in JAX for reference; with torch and timm installed, timm's own model exported by
`torch.onnx.export` in onnxruntime too. Latency: the median of `--runs` calls after `--warmup`,
every format called in turn in each round (side by side, so that load changes weigh alike).
Formats whose converter or runtime is not installed are reported as skipped.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
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


def interleaved_ms(calls: dict, images, runs: int, warmup: int) -> dict[str, float]:
  """{name: median latency in ms} of each call on `images`, timed in turns (one call of each per
  round), so that the machine's load changes weigh on every format alike."""
  for call in calls.values():
    for _ in range(warmup):
      call(images)
  times = {name: [] for name in calls}
  for _ in range(runs):
    for name, call in calls.items():
      start = time.perf_counter()
      call(images)
      times[name].append(time.perf_counter() - start)
  return {name: 1000 * statistics.median(t) for name, t in times.items()}


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


# Run in a process of its own: torch's export segfaulted in one process with TensorFlow and JAX.
TIMM_EXPORT = """
import sys
import timm
import torch
name, size, classes, file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = timm.create_model(name, pretrained=False, num_classes=classes).eval()
# The exporter torch recommends (dynamo), with a free batch like ours.
torch.onnx.export(model, (torch.zeros(2, 3, size, size),), file, input_names=['images'],
                  output_names=['logits'], dynamo=True, external_data=False,
                  dynamic_shapes={'x': {0: torch.export.Dim('N')}})
"""


def timm_onnx(exportable: rec.Exportable, directory: str):
  """timm's model of the same network, exported by torch.onnx.export: (file, runner), or the
  reason it is not timed (not installed; not a full-width network of timm's)."""
  missing = [m for m in ('torch', 'timm', 'onnxruntime') if importlib.util.find_spec(m) is None]
  if missing:
    return f'{" and ".join(missing)} not installed'
  name, size = exportable.record.model, exportable.image_size
  if name not in ('inception_v3', 'inception_v4', 'inception_resnet_v2'):
    return f'timm has no {name}'
  if exportable.record.options.get('depth_multiplier', 1.0) != 1.0:
    return 'the network is narrower than timm\'s (depth_multiplier)'
  file = os.path.join(directory, 'timm.onnx')
  done = subprocess.run([sys.executable, '-c', TIMM_EXPORT, name, str(size),
                         str(exportable.num_classes), file], capture_output=True, text=True)
  if done.returncode:
    return f'torch.onnx.export failed: {done.stderr.strip().splitlines()[-1:]}'
  import onnxruntime  # deferred: optional
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
  found = []  # (name, file or None, conversion seconds or None, images -> logits)

  logits = jax.jit(exportable.logits_fn())
  found.append(('jax (the network)', None, None, lambda x: np.asarray(logits(x))))
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
    print(f'{fmt}: exported in {seconds:.1f} s', file=sys.stderr, flush=True)
    call = runners(fmt, directory)
    if isinstance(call, str):
      print(f'{fmt}: exported, not timed ({call})', file=sys.stderr)
      continue
    found.append((fmt, directory if fmt == 'savedmodel' else _file(directory), seconds, call))
  timm = timm_onnx(exportable, output)
  if isinstance(timm, str):
    print(f'timm ONNX: skipped ({timm})', file=sys.stderr)
  else:
    found.append(('timm onnx (torch.onnx.export)', timm[0], None, timm[1]))

  calls = {name: call for name, _, _, call in found}
  latency = {b: interleaved_ms(calls, images[b], args.runs, args.warmup) for b in batches}
  rows = [{'format': name, 'file_mb': round(size_mb(file), 1) if file else None,
           'convert_s': round(seconds, 1) if seconds is not None else None,
           **{f'batch{b}_ms': round(latency[b][name], 2) for b in batches}}
          for name, file, seconds, _ in found]
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
