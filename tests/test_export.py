"""`python -m inception_jax.export`: every format computes what the JAX network computes, in its own
runtime, and loads without this project.

One tiny network trained for TRAINED_STEPS steps on the digits, so that its top-1 is well above
chance and its top classes are not near-ties (a random or barely trained network's are: int8
rounding would flip them, and that would measure the ties, not the quantization). Float formats
match JAX within 1e-4 of the largest logit; the int8 TFLite model agrees on the top-1 class of at
least 99% of IMAGES digits. Tests that need the `export` extra (LiteRT, onnxruntime, jax2onnx) skip
without it (.ci/export installs it and runs them); the SavedModel and StableHLO ones need only the
base install.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inception_jax import checkpoint as ckpt, export, tf_import
from inception_jax.errors import ConfigError

from test_readme_examples import DEPLOYING, block, commands, run as run_readme, substitute
from train_utils import ROOT, environment, run

# One xdist worker runs them all (pytest.ini: --dist loadgroup): the network is trained and exported
# once, not once per worker.
pytestmark = pytest.mark.xdist_group('export')
TRAINED_STEPS = 150
IMAGES = 512
TOLERANCE = 1e-4  # relative to the largest |logit|
EXTRA = 'the export extra is not installed: pip install -e ".[export]"'
# Skipped before their fixtures train and export anything.
needs_litert = pytest.mark.skipif(importlib.util.find_spec('ai_edge_litert') is None, reason=EXTRA)
needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None,
                                       reason=EXTRA)
# Run first in the subprocesses that load an export: this project cannot be imported there (an
# editable install would otherwise reach it through site-packages).
WITHOUT_PROJECT = textwrap.dedent('''\
    import importlib.abc, sys
    class Refuse(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('inception_jax', 'configs'):
          raise ImportError(f'{name} is not importable in this test')
    sys.meta_path.insert(0, Refuse())
    try:
      import inception_jax
      raise SystemExit('inception_jax is importable')
    except ImportError:
      pass
    import numpy as np
    ''')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('export_trained'))
  run(workdir, num_train_steps=TRAINED_STEPS, eval_every_steps=TRAINED_STEPS,
      checkpoint_every_steps=TRAINED_STEPS, lr_decay_epochs=100)
  return workdir


@pytest.fixture(scope='module')
def formats():
  """Every format, but ONNX where the export extra (jax2onnx, onnx) is not installed."""
  try:
    export.check_installed(['onnx'])
    return list(export.FORMATS)
  except ConfigError:
    return [f for f in export.FORMATS if f != 'onnx']


@pytest.fixture(scope='module')
def exported(trained, formats, tmp_path_factory):
  """The trained network exported to every format by README.md's Deploying command (less ONNX
  where the export extra is not installed), run as written but for the paths."""
  output = str(tmp_path_factory.mktemp('exported'))
  text = substitute(block(DEPLOYING).text, [
      ('/path/to/irv2_export', output), ('--checkpoint=/path/to/irv2', f'--checkpoint={trained}')])
  if 'onnx' not in formats:
    text = substitute(text, [(',onnx,', ',')])
  (words,) = [w for w in commands(text) if w[:3] == ['python', '-m', 'inception_jax.export']]
  result = run_readme(words, timeout=900)
  assert result.returncode == 0, result.stderr
  for fmt in formats:
    assert os.path.join(output, fmt) in result.stdout
  return output


@pytest.fixture(scope='module')
def reference(trained):
  """(images [IMAGES, 16, 16, 3] in [-1, 1], JAX's {'logits', 'probabilities'} of them)."""
  import jax

  from inception_jax.data import digits
  from inception_jax.export import record
  pixels, _ = digits.load(16)
  images = pixels[:IMAGES].astype(np.float32) / 127.5 - 1.0
  outputs = jax.jit(record.load(trained).outputs_fn())(images)
  return images, {k: np.asarray(v) for k, v in outputs.items()}


def assert_close(outputs, expected):
  """Each output within TOLERANCE of JAX's, relative to its largest magnitude; prints the error
  (`pytest tests/test_export.py -rP` shows it: the figures of README's Deploying)."""
  for name in ('logits', 'probabilities'):
    scale = np.abs(expected[name]).max()
    error = np.abs(np.asarray(outputs[name]) - expected[name]).max()
    print(f'{name}: largest error {error / scale:.2g} of the largest value')
    assert error <= TOLERANCE * scale, f'{name}: {error} > {TOLERANCE} * {scale}'


def run_without_project(script, tmp_path):
  """Runs `script` (after WITHOUT_PROJECT) in an isolated interpreter (-I: no PYTHONPATH, no
  current directory on sys.path) in `tmp_path`; returns its `out.npz`."""
  path = tmp_path / 'script.py'
  path.write_text(WITHOUT_PROJECT + textwrap.dedent(script))
  env = {k: v for k, v in environment().items() if k != 'PYTHONPATH'}
  result = subprocess.run([sys.executable, '-I', str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return dict(np.load(tmp_path / 'out.npz'))


def image_files(directory):
  """JPEG and PNG files of digits at several sizes and aspect ratios, as a user would have."""
  from inception_jax.data import digits
  tf = tf_import.tensorflow()
  pixels, _ = digits.load(48)
  files = []
  for i, (height, width) in enumerate([(48, 48), (40, 48), (48, 36), (30, 30)]):
    image = tf.image.resize(pixels[IMAGES + i], (height, width))
    image = tf.cast(tf.round(image), tf.uint8)
    for kind, encode in (('jpg', tf.io.encode_jpeg), ('png', tf.io.encode_png)):
      files.append(str(directory / f'digit{i}.{kind}'))
      tf.io.write_file(files[-1], encode(image))
  return files


def test_savedmodel_loads_with_tensorflow_alone(trained, exported, reference, tmp_path):
  """Both signatures, from TensorFlow without the project; the float one at two batch sizes, the
  bytes one with the same top-5 (names and probabilities) as `python -m inception_jax.predict`."""
  images, expected = reference
  np.save(tmp_path / 'images.npy', images)
  files = image_files(tmp_path)
  outputs = run_without_project(f'''
      import tensorflow as tf
      model = tf.saved_model.load({os.path.join(exported, 'savedmodel')!r})
      images = np.load('images.npy')
      serve, classify = model.signatures['serving_default'], model.signatures['classify']
      full = serve(images=tf.constant(images))
      one = serve(images=tf.constant(images[:1]))
      top = classify(encoded=tf.constant([open(f, 'rb').read() for f in {files!r}]))
      np.savez('out.npz', logits=full['logits'], probabilities=full['probabilities'],
               one=one['logits'], classes=top['classes'], names=top['names'].numpy().astype(str),
               top=top['probabilities'])
      ''', tmp_path)
  assert_close(outputs, expected)
  np.testing.assert_allclose(outputs['one'], outputs['logits'][:1], rtol=0, atol=1e-5)

  result = subprocess.run([sys.executable, '-m', 'inception_jax.predict',
                           f'--checkpoint={trained}', *files], cwd=ROOT,
                          env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for i, file in enumerate(files):
    block = lines[6 * i: 6 * i + 6]
    assert block[0] == file
    names = [line.split(maxsplit=2)[2] for line in block[1:]]
    percents = [float(line.split()[1].rstrip('%')) for line in block[1:]]
    assert names == list(outputs['names'][i]), file
    np.testing.assert_allclose(percents, 100 * outputs['top'][i], atol=0.006, err_msg=file)
    assert [int(n) for n in names] == list(outputs['classes'][i])  # the digits' classes: '0'..'9'


def test_stablehlo_reloads_with_jax_alone(exported, reference, tmp_path):
  images, expected = reference
  np.save(tmp_path / 'images.npy', images)
  outputs = run_without_project(f'''
      import jax
      exported = jax.export.deserialize(
          open({os.path.join(exported, 'stablehlo', 'model.stablehlo')!r}, 'rb').read())
      images = np.load('images.npy')
      full, one = exported.call(images), exported.call(images[:1])
      np.savez('out.npz', logits=full['logits'], probabilities=full['probabilities'],
               one=one['logits'])
      ''', tmp_path)
  assert_close(outputs, expected)
  np.testing.assert_allclose(outputs['one'], outputs['logits'][:1], rtol=0, atol=1e-5)


def test_lowered_for_several_platforms(trained, reference, tmp_path):
  """--platforms=cpu,cuda,tpu: one program per platform in the StableHLO and the SavedModel; the
  CPU one runs here."""
  import jax
  images, expected = reference
  expected = {k: v[:8] for k, v in expected.items()}
  platforms = ('cpu', 'cuda', 'tpu')
  records = export.export(trained, str(tmp_path), ['stablehlo', 'savedmodel'],
                          platforms=platforms)
  assert [records[f].export['platforms'] for f in ('stablehlo', 'savedmodel')] == [
      list(platforms)] * 2
  with open(tmp_path / 'stablehlo' / 'model.stablehlo', 'rb') as f:
    exported = jax.export.deserialize(f.read())
  assert exported.platforms == platforms
  assert_close(exported.call(images[:8]), expected)
  tf = tf_import.tensorflow()
  serve = tf.saved_model.load(str(tmp_path / 'savedmodel')).signatures['serving_default']
  assert_close({k: v.numpy() for k, v in serve(images=images[:8]).items()}, expected)


@needs_litert
def test_tflite_runs_in_litert(exported, reference):
  from ai_edge_litert import interpreter
  images, expected = reference
  path = os.path.join(exported, 'tflite', 'model.tflite')
  runner = interpreter.Interpreter(model_path=path).get_signature_runner()
  assert_close(runner(images=images), expected)
  one = interpreter.Interpreter(model_path=path).get_signature_runner()(images=images[:1])
  np.testing.assert_allclose(one['logits'], expected['logits'][:1], rtol=0,
                             atol=TOLERANCE * np.abs(expected['logits']).max())


@needs_litert
def test_tflite_int8_agrees_on_top1(exported, reference):
  from ai_edge_litert import interpreter
  images, expected = reference
  int8 = os.path.join(exported, 'tflite_int8', 'model.tflite')
  outputs = interpreter.Interpreter(model_path=int8).get_signature_runner()(images=images)
  agreement = np.mean(outputs['logits'].argmax(-1) == expected['logits'].argmax(-1))
  print(f'int8 top-1 agreement: {agreement:.1%}')
  assert agreement >= 0.99, agreement
  assert os.path.getsize(int8) < 0.5 * os.path.getsize(int8.replace('tflite_int8', 'tflite'))


@needs_onnxruntime
@pytest.mark.skipif(importlib.util.find_spec('jax2onnx') is None, reason=EXTRA)
def test_onnx_runs_in_onnxruntime(exported, reference):
  import onnxruntime
  images, expected = reference
  session = onnxruntime.InferenceSession(os.path.join(exported, 'onnx', 'model.onnx'),
                                         providers=['CPUExecutionProvider'])
  logits, probabilities = session.run(['logits', 'probabilities'], {'images': images})
  assert_close({'logits': logits, 'probabilities': probabilities}, expected)
  one, _ = session.run(None, {'images': images[:1]})
  np.testing.assert_allclose(one, logits[:1], rtol=0, atol=1e-5)


def test_every_format_has_its_record(exported, formats, trained):
  source = ckpt.ModelRecord.read(trained)
  for fmt in formats:
    record = ckpt.ModelRecord.read(os.path.join(exported, fmt), step_dirs=False)
    assert record.model == source.model and record.classes == source.classes
    assert record.image_size == 16 and record.options['aux_logits'] is False
    assert record.options['depth_multiplier'] == 0.125
    assert record.export['format'] == fmt and record.export['names'] == source.classes
    assert os.path.exists(os.path.join(exported, fmt, record.export['file']))
    assert 'central 87.5% crop' in record.export['preprocessing']
    json.dumps(record.export)


def export_command(*flags):
  return subprocess.run([sys.executable, '-m', 'inception_jax.export', *flags], cwd=ROOT,
                        env=environment(), capture_output=True, text=True, timeout=600)


def test_errors_name_the_fix(trained, tmp_path, monkeypatch):
  """An unknown format and a checkpoint of another network: two lines, exit status 2; a missing
  converter names what to install."""
  result = export_command(f'--checkpoint={trained}', f'--output={tmp_path}', '--format=onnx,pdf')
  assert result.returncode == 2
  assert result.stderr.splitlines()[-2:] == [
      'error: --format: pdf: no such format: pass one or more of '
      f'{",".join(export.FORMATS)} (e.g. --format=savedmodel,tflite).',
      '(INCEPTION_JAX_TRACEBACK=1 shows the traceback.)']
  result = export_command(f'--checkpoint={trained}', f'--output={tmp_path}',
                          '--model=inception_v4')
  assert result.returncode == 2
  assert result.stderr.splitlines()[-2].startswith('error: ')
  assert 'holds inception_resnet_v2' in result.stderr and 'leave --model out' in result.stderr
  assert not os.listdir(tmp_path)

  find_spec = importlib.util.find_spec
  for absent in ('onnx', 'jax2onnx'):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a, absent=absent: (
        None if name == absent else True if name in ('onnx', 'jax2onnx') else find_spec(name, *a)))
    with pytest.raises(ConfigError, match=rf'--format=onnx needs {absent}, which is not '
                       r'installed: install the export extra, pip install -e "\.\[export\]"\.$'):
      export.check_installed(['savedmodel', 'onnx'])
  export.check_installed(['savedmodel', 'tflite', 'stablehlo'])  # nothing beyond the base install


@needs_litert
@needs_onnxruntime
def test_benchmark_times_every_format(trained, formats, tmp_path):
  """benchmarks/export.py on the tiny network: a row per format with its size and latencies."""
  result = subprocess.run(
      [sys.executable, 'benchmarks/export.py', f'--checkpoint={trained}', '--batches=1,3',
       '--runs=1', '--warmup=0', f'--output={tmp_path}', '--json'],
      cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  timm = [r for r in rows if r['format'].startswith('timm')]
  assert [r['format'] for r in rows if r not in timm] == ['jax (the network)', *formats]
  for row in rows:
    assert row['batch1_ms'] > 0 and row['batch3_ms'] > 0
    assert (row['file_mb'] is None) == (row['format'] == 'jax (the network)')
  assert timm or 'timm ONNX: skipped (' in result.stderr
