"""The evaluation command: single-crop as the job logs it, multi-crop, ensembles, bad input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax import checkpoint as ckpt, evaluate
from inception_jax.data import crops
from inception_jax.models import create
from inception_jax.steps import init_variables

from train_utils import ROOT, environment, metrics, mocked_tfds, write_image_folder


def last_eval(workdir):
  return [row for row in metrics(workdir) if 'eval_top1' in row][-1]


def test_single_crop_equals_the_jobs_logged_eval(straight):
  logged = last_eval(straight)
  for params, prefix in (('ema', 'eval_'), ('raw', 'eval_raw_')):
    [record] = evaluate.evaluate([straight], [1], params=params)
    assert record['dataset'] == 'digits' and record['images'] == logged['eval_examples']
    assert (record['top1'], record['top5']) == (logged[f'{prefix}top1'], logged[f'{prefix}top5'])


def with_logits_bias(workdir, directory, bias):
  """A copy of the workdir's network whose classifier outputs `bias` for every image."""
  variables = jax.tree_util.tree_map(np.asarray, ckpt.load_variables(workdir, ema=True))
  logits = variables['params']['Logits']
  logits['kernel'] = np.zeros_like(logits['kernel'])
  logits['bias'] = np.asarray(bias, np.float32)
  ckpt.save_variables(str(directory), variables, ckpt.ModelRecord.read(workdir))
  return str(directory)


def test_ensembles_average_probabilities(straight, tmp_path):
  # Two copies of one network: the ensemble's numbers are the network's.
  one, two = evaluate.evaluate([straight], [1]), evaluate.evaluate([straight, straight], [1])
  assert [r['models'] for r in two] == [[m] for m in one[0]['models']] * 2 + [
      one[0]['models'] * 2]
  for record in two:
    assert (record['top1'], record['top5']) == (one[0]['top1'], one[0]['top5'])
  # Averaged probabilities favour class 1 (certain in the first network), averaged logits
  # class 2: every image is put in class 1.
  first = with_logits_bias(straight, tmp_path / 'a', [0, 100, 0, 0, 0, 0, 0, 0, 0, 0])
  second = with_logits_bias(straight, tmp_path / 'b', [0, -100, 1, 0, 0, 0, 0, 0, 0, 0])
  mean_logits = np.mean([[0, 100, 0], [0, -100, 1]], axis=0)
  assert np.argmax(mean_logits) == 2
  records = evaluate.evaluate([first, second], [1], dataset='digits')
  batches = list(evaluate.make_source('digits', None, None, 16, 8).eval_batches())
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  assert records[-1]['top1'] == pytest.approx(np.mean(labels == 1))
  assert records[-1]['top1'] != pytest.approx(np.mean(labels == 2))


@pytest.fixture
def imagenet_network(tmp_path):
  """A tiny network with a TF-slim 1001-class head (background first), at 75x75."""
  network = create('inception_resnet_v2', num_classes=1001, depth_multiplier=0.125,
                   repeats=(1, 1, 1))
  variables = jax.jit(lambda: init_variables(network, (75, 75, 3), seed=0))()
  record = ckpt.ModelRecord('inception_resnet_v2', {
      'num_classes': 1001, 'depth_multiplier': 0.125, 'repeats': [1, 1, 1]}, 75,
      'imagenet+background')
  ckpt.save_variables(str(tmp_path / 'net'), jax.device_get(variables), record)
  return str(tmp_path / 'net')


def test_multi_crop_on_mock_imagenet(imagenet_network):
  with mocked_tfds(num_examples=6):
    members = [evaluate.load_member(imagenet_network, 'ema')]
    evaluate.check_classes(members, evaluate.make_source('imagenet2012', None, None, 75, 2))
    assert members[0].drop_background  # scored on ImageNet's 1000 classes
    records = evaluate.evaluate([imagenet_network], [1, 10], dataset='imagenet2012',
                                batch_size=2)
  assert [(r['crops'], r['images']) for r in records] == [(1, 6), (10, 6)]
  assert all(0 <= r['top5_error'] <= 100 for r in records)


def test_multi_crop_on_a_folder_skips_a_corrupt_file(straight, tmp_path, capsys):
  images = write_image_folder(tmp_path / 'images', corrupt=False)
  (images / 'val' / 'dog' / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  network = tmp_path / 'folder_net'  # the tiny network re-headed for the folder's two classes
  variables = jax.tree_util.tree_map(np.asarray, ckpt.load_variables(straight, ema=True))
  logits = variables['params']['Logits']
  logits['kernel'], logits['bias'] = logits['kernel'][:, :2], logits['bias'][:2]
  record = ckpt.ModelRecord.read(straight)
  record = ckpt.ModelRecord(record.model, dict(record.options, num_classes=2), 16,
                            ['cat', 'dog'])
  ckpt.save_variables(str(network), variables, record)
  records = evaluate.evaluate([str(network)], [1, 144], dataset=f'folder:{images}',
                              batch_size=2)
  assert [(r['crops'], r['images']) for r in records] == [(1, 4), (144, 4)]
  out = capsys.readouterr().out
  assert out.count('broken.jpg') == 1 and '1 unreadable image(s) skipped in val' in out
  with pytest.raises(FileNotFoundError, match='/test/<class>/'):  # no such split
    evaluate.make_source(f'folder:{images}', None, 'test', 16, 2)
  with pytest.raises(ValueError, match=r'classifies 2 classes \(cat, dog\), but digits has 10 '
                     r'\(0, 1, 2, 3, \.\.\.\)'):
    evaluate.evaluate([str(network)], [1], dataset='digits')


def test_command_prints_the_table_writes_json_and_dumps_crops(straight, tmp_path):
  output, dump = tmp_path / 'evaluation.json', tmp_path / 'crops'
  result = subprocess.run(
      [sys.executable, '-m', 'inception_jax.evaluate', f'--checkpoint={straight}',
       '--crops=1,12', '--json', f'--output={output}', f'--dump_crops={dump}'],
      cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('models '))
  assert lines[header].split() == ['models', 'crops', 'top-1', 'error', 'top-5', 'error', 'images']
  assert lines[header + 1].split()[:3] == ['inception_resnet_v2', f'({os.path.basename(straight)})',
                                           '1']
  printed = [json.loads(line) for line in lines if line.startswith('{')]
  with open(output) as f:
    assert json.load(f) == printed and [r['crops'] for r in printed] == [1, 12]
  assert sorted(os.listdir(dump)) == sorted(
      ['original.png', '1crops-central.png'] + [f'12crops-{n}.png' for n in crops.names(12, 16)])


@pytest.mark.parametrize('flags,message', [
    (['--checkpoint=/nonexistent', '--crops=1'], '--checkpoint /nonexistent is not a directory'),
    (['--crops=7'], '--crops=7: the protocols are 1, 10, 12, 144'),
    (['--crops=1', '--dataset=digits', '--split=test'], 'digits has one eval split'),
])
@pytest.mark.quick
def test_bad_input_is_two_lines_naming_the_fix(straight, flags, message):
  if not any(f.startswith('--checkpoint') for f in flags):
    flags.append(f'--checkpoint={straight}')
  result = subprocess.run([sys.executable, '-m', 'inception_jax.evaluate', *flags], cwd=ROOT,
                          env=environment(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 2 and message in lines[0], result.stderr


def test_mixed_image_sizes_and_eight_devices(straight, tmp_path):
  """An ensemble of one network at 16x16 and at 24x24 (each gets its own crops); and the same
  evaluation sharded over 8 devices gives the same counts as on one."""
  variables = jax.tree_util.tree_map(np.asarray, ckpt.load_variables(straight, ema=True))
  record = ckpt.ModelRecord.read(straight)
  larger = str(tmp_path / 'at24')
  ckpt.save_variables(larger, variables, ckpt.ModelRecord(record.model, record.options, 24,
                                                          record.classes, record.source))
  here = evaluate.evaluate([straight, larger], [1, 10], batch_size=8)
  assert [(r['crops'], len(r['models']), r['images']) for r in here] == [
      (1, 1, 297), (1, 1, 297), (1, 2, 297), (10, 1, 297), (10, 1, 297), (10, 2, 297)]
  output = tmp_path / 'eight.json'
  result = subprocess.run(
      [sys.executable, '-m', 'inception_jax.evaluate', f'--checkpoint={straight},{larger}',
       '--crops=1,10', '--batch_size=8', f'--output={output}'],
      cwd=ROOT, env=environment(devices=8), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  with open(output) as f:
    eight = json.load(f)
  for a, b in zip(here, eight):
    assert (a['crops'], a['models'], a['images']) == (b['crops'], b['models'], b['images'])
    assert abs(a['top1'] - b['top1']) * 297 <= 1 and abs(a['top5'] - b['top5']) * 297 <= 1
