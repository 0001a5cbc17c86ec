"""Classifying image files with a checkpoint: a training workdir, or converted weights."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax import checkpoint as ckpt, imagenet, predict, tf_import
from inception_jax.models import create, unstack_blocks

from test_convert import convert_command
from test_weights import random_variables, write_slim_checkpoint
from train_utils import (
  ROOT,
  assert_trees_equal,
  command,
  environment,
  metrics,
  write_image_folder,
)


def test_predict_classifies_with_a_training_workdir(straight, tmp_path):
  """The workdir's model.json names the network and the digits' classes; predict uses the EMA."""
  from inception_jax.data import digits
  tf = tf_import.tensorflow()
  record = ckpt.ModelRecord.read(straight)
  assert record.model == 'inception_resnet_v2' and record.classes == [str(d) for d in range(10)]
  images, labels = digits.load(16)
  paths = []
  for i in range(4):
    paths.append(str(tmp_path / f'digit{labels[i]}_{i}.png'))
    tf.io.write_file(paths[-1], tf.io.encode_png(images[i]))
  predictor = predict.Predictor(straight)
  assert not predictor.model.scan_blocks and predictor.model.depth_multiplier == 0.125
  ema = ckpt.load_variables(straight, ema=True)['params']
  assert_trees_equal(jax.device_get(predictor.variables['params']),
                     unstack_blocks(jax.tree_util.tree_map(np.asarray, ema)))
  batch = np.stack([predictor.preprocess(open(p, 'rb').read()) for p in paths])
  assert batch.shape == (4, 16, 16, 3) and -1 <= batch.min() and batch.max() <= 1
  with pytest.raises(ValueError, match='holds inception_resnet_v2 .*not inception_v4; leave '
                     '--model out'):
    predict.Predictor(straight, model='inception_v4')
  tops = predictor.top(batch, k=3, batch=8)
  assert len(tops) == 4
  for top in tops:
    assert len(top) == 3 and {name for name, _ in top} <= set(record.classes)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert 0 < sum(p for _, p in top) <= 1 + 1e-6


@pytest.fixture(scope='module')
def converted_v3(tmp_path_factory):
  """(TF-slim checkpoint prefix, its conversion): random Inception-v3 weights, 1001 classes."""
  root = tmp_path_factory.mktemp('converted_v3')
  name = 'inception_v3'
  prefix = str(root / 'slim' / 'inception_v3.ckpt')
  write_slim_checkpoint(prefix, random_variables(create(name, num_classes=1001), seed=2), name)
  output = str(root / 'converted')
  convert_command('--source=slim', f'--model={name}', f'--input={prefix}', f'--output={output}')
  return prefix, output


def test_convert_slim_then_predict_images(tmp_path, converted_v3):
  """The whole path a user takes: a TF-slim checkpoint -> convert -> predict on their images."""
  tf = tf_import.tensorflow()
  _, output = converted_v3

  rng = np.random.default_rng(0)
  images = {'photo.jpg': tf.io.encode_jpeg(rng.integers(0, 256, (320, 400, 3), np.uint8)),
            'drawing.png': tf.io.encode_png(rng.integers(0, 256, (200, 180, 3), np.uint8))}
  for file, data in images.items():
    tf.io.write_file(str(tmp_path / file), data)
  (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  files = [str(tmp_path / f) for f in ('photo.jpg', 'broken.jpg', 'drawing.png', 'missing.png')]
  result = subprocess.run([sys.executable, '-m', 'inception_jax.predict', f'--checkpoint={output}',
                           *files], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 1, result.stderr
  assert f'error: {files[1]}: cannot read it as an image' in result.stderr
  assert f'error: {files[3]}: cannot read it as an image' in result.stderr
  assert '2 of 4 images could not be read.' in result.stderr
  lines = result.stdout.splitlines()
  assert [l for l in lines if not l.startswith(' ')] == [files[0], files[2]]
  known = set(imagenet.short_names())
  for block in (lines[1:6], lines[7:12]):
    probabilities = []
    for rank, line in enumerate(block, 1):
      number, percent, label = line.split(maxsplit=2)
      assert number == f'{rank}.' and label.rsplit(' (', 1)[0] in known
      probabilities.append(float(percent.rstrip('%')) / 100)
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001


def test_label_names_for_imagenet_records_and_class_lists():
  names = predict.label_names('imagenet', 1000)
  assert names[0] == 'tench (n01440764)' and len(names) == 1000
  assert predict.label_names('imagenet+background', 1001)[:2] == ['background',
                                                                  'tench (n01440764)']
  assert predict.label_names(None, 1000) == names  # a 1000-way head without a record
  assert predict.label_names(['cat', 'dog'], 2) == ['cat', 'dog']
  assert predict.label_names(None, 3) == ['class 0', 'class 1', 'class 2']
  with pytest.raises(ValueError, match='names 2 classes but its classifier has 3 outputs'):
    predict.label_names(['cat', 'dog'], 3)


def test_convert_finetune_predict_on_a_folder(tmp_path, converted_v3):
  """The README's fine-tuning example: converted weights -> configs/finetune.py on a folder of
  images -> predict with the fine-tuned workdir (full Inception-v3 at its 75x75 minimum)."""
  prefix, converted = converted_v3
  images = write_image_folder(tmp_path / 'images', corrupt=False)  # 12 train, 4 val, 2 classes
  workdir = str(tmp_path / 'finetuned')
  result = subprocess.run(
      command(workdir, config='configs/finetune.py:iv3', init_from=converted,
              **{'dataset.name': f'folder:{images}', 'dataset.image_size': 75,
                 'batch_size': 4, 'num_epochs': 1}),
      cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  params = ckpt.load_variables(converted)['params']
  count = sum(x.size for k, v in params.items() if k != 'Logits'
              for x in jax.tree_util.tree_leaves(v))
  assert (f'Starting from {converted} (inception_v3, slim:{prefix}): {count:,} pretrained '
          'parameters loaded; Logits re-initialised (2 classes).') in result.stdout
  logged = metrics(workdir)
  # Three steps per epoch: a log line each 0.1 epoch (every step), an evaluation each epoch, over
  # the 4 eval images in one batch (not padded to the config's 64).
  assert [r['step'] for r in logged if 'loss' in r] == [1, 2, 3]
  assert [(r['step'], r['eval_examples']) for r in logged if 'eval_top1' in r] == [(3, 4)]

  photo = str(images / 'val' / 'dog' / '1.jpg')
  result = subprocess.run([sys.executable, '-m', 'inception_jax.predict',
                           f'--checkpoint={workdir}', '--top=2', photo],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == photo and sorted(l.split()[-1] for l in lines[1:]) == ['cat', 'dog']
