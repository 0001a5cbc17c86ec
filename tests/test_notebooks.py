"""The notebooks (notebooks/*.ipynb): committed without outputs, and run top to bottom in their
test mode (INCEPTION_JAX_NOTEBOOK_TEST=1) in a fresh kernel, as a person runs them."""

import base64
import glob
import os
import re

import nbformat
import pytest

from train_utils import ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb')))
TEST_MODE = 'INCEPTION_JAX_NOTEBOOK_TEST'


def read(name):
  return nbformat.read(os.path.join(ROOT, 'notebooks', f'{name}.ipynb'), as_version=4)


def code(notebook):
  return [cell for cell in notebook.cells if cell.cell_type == 'code']


def test_both_notebooks_exist_and_are_committed_without_outputs():
  assert [os.path.basename(p) for p in NOTEBOOKS] == ['quickstart.ipynb',
                                                      'residual_scaling.ipynb']
  for path in NOTEBOOKS:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in code(notebook):
      assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:60])
    name = os.path.basename(path)
    assert f'colab.research.google.com/github/inception-jax/inception_jax/blob/main/notebooks/' \
           f'{name}' in notebook.cells[0].source, 'the Open in Colab badge opens this notebook'
    setup = code(notebook)[0].source
    # The repository's URL in one variable; installs only where the package is missing.
    assert len(re.findall(r'https://github\.com/', setup)) == 1 and 'REPO_URL = ' in setup
    assert "if importlib.util.find_spec('inception_jax') is None:" in setup
    assert 'startup.start()' in setup and 'tf_import.tensorflow()' in setup
    # An installed TensorFlow (Colab's) is kept: no tensorflow-cpu beside it.
    assert "find_spec('tensorflow')" in setup and 'requirements/keep-tensorflow.txt' in setup
    assert TEST_MODE in code(notebook)[1].source


def execute(name, directory):
  """Runs notebook `name` in test mode with `directory` as its working directory; the executed
  notebook. A failing cell fails the test with the cell and its error."""
  from nbclient import NotebookClient
  from nbclient.exceptions import CellExecutionError
  notebook = read(name)
  env = dict(os.environ, **{TEST_MODE: '1', 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'})
  env.pop('XLA_FLAGS', None)  # the kernel starts as a user's would: inception_jax sets its own
  client = NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(directory)}})
  try:
    client.execute(env=env)
  except CellExecutionError as e:
    pytest.fail(f'{name}.ipynb: a cell failed:\n{e}')
  return notebook


def text(cell):
  return ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')


def images(notebook):
  return [base64.b64decode(o.data['image/png']) for cell in code(notebook) for o in cell.outputs
          if 'data' in o and 'image/png' in o.data]


def test_quickstart_runs_from_zoo_to_multi_crop_evaluation(tmp_path):
  notebook = execute('quickstart', tmp_path)
  cells = code(notebook)
  assert cells[0].outputs == [], 'the install cell does nothing where the package is installed'
  outputs = [text(cell) for cell in cells]
  everything = '\n'.join(outputs)
  assert 'inception_resnet_v2             55,843,464    13.16  (1, 1000) float32' in everything
  assert 'NOT PRETRAINED: huggingface.co/timm/inception_resnet_v2.tf_in1k could not be ' \
         'downloaded (downloading was switched off)' in everything
  assert "{'Mixed_5b': (2, 35, 35, 320), 'Mixed_6a': (2, 17, 17, 1088)}" in everything
  top5 = next(o for o in outputs if 'RANDOM WEIGHTS: these classes are meaningless.' in o)
  assert re.findall(r'^(china|flower)\.jpg$', top5, re.M) == ['china', 'flower']
  assert len(re.findall(r'^  [1-5]\. +\d+\.\d\d%  \S', top5, re.M)) == 10
  assert 'Logits re-initialised (2 classes).' in everything
  assert re.search(r'^step 4/4 ', everything, re.M)
  table = re.findall(r'^inception_resnet_v2 \(finetune\) +(\d+) +[\d.]+% +[\d.]+% +4$',
                     everything, re.M)
  assert table == ['1', '12'], 'each protocol over the 4 validation images (144: not in tests)'
  assert re.findall(r'^(china|flower)\.jpg (china|flower) [\d.]+% (china|flower) [\d.]+%$',
                    outputs[-1], re.M)
  pictures = images(notebook)
  assert len(pictures) == 3 and all(p.startswith(b'\x89PNG') for p in pictures)
  assert (tmp_path / 'inception_jax_quickstart' / 'finetune' / 'metrics.jsonl').is_file()


def test_residual_scaling_runs_both_scales_and_says_what_happened(tmp_path):
  notebook = execute('residual_scaling', tmp_path)
  everything = '\n'.join(text(cell) for cell in code(notebook))
  for scale in ('1.0', '0.1'):
    assert f'--- residual scale {scale}' in everything
    assert (tmp_path / 'inception_jax_residual_scaling' / f'scale_{scale}' /
            'metrics.jsonl').is_file()
  words = text(code(notebook)[-1])
  assert words.startswith(('No run died', 'scale 1.0 died', 'scale 0.1 died'))
  assert 'Top-1 eval error at the first evaluation: scale 1.0 ' in words
  assert 'Top-1 eval error at the last evaluation: scale 1.0 ' in words
  assert re.search(r'The final errors span [\d.]+ points, (larger than|within) what 297 eval '
                   r'images resolve', words)
  assert len(images(notebook)) == 1
