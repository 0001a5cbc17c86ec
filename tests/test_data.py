"""Input pipelines without network access: TFDS mock data, generated images, preprocessing
geometry."""

import os
import re
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from inception_jax.data import create_source, preprocessing

from train_utils import assert_near_chance_over, mocked_tfds, tiny_config, write_image_folder


def dataset_config(name, image_size=75, **fields):
  config = tiny_config(**{'dataset.name': name, 'dataset.image_size': image_size})
  for key, value in fields.items():
    config.dataset[key] = value
  return config.dataset


def make(name, batch_size=8, eval_batch_size=8, seed=0, process_index=0, process_count=1,
         **fields):
  return create_source(dataset_config(name, **fields), batch_size=batch_size,
                       eval_batch_size=eval_batch_size, seed=seed, process_index=process_index,
                       process_count=process_count)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def recording(source):
  """Wraps a source's training reader to record the indices it reads."""
  seen = []
  read = source.read_train

  def read_and_record(indices):
    seen.extend(int(i) for i in indices)
    return read(indices)

  source.read_train = read_and_record
  return seen


@pytest.fixture
def mock_tfds():
  with mocked_tfds(num_examples=40):
    yield


@pytest.mark.quick
def test_imagenet_batches_have_the_model_shapes_and_label_range(mock_tfds):
  source = make('imagenet2012')
  assert source.num_classes == 1000 and source.image_shape == (75, 75, 3)
  batch = next(source.train_batches(0))
  assert batch['image'].shape == (8, 75, 75, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].dtype == np.int32
  assert np.all((0 <= batch['label']) & (batch['label'] < 1000))
  assert batch['image'].std() > 0
  background = make('imagenet2012', background_class=True)
  assert background.num_classes == 1001
  labels = next(background.train_batches(0))['label']
  np.testing.assert_array_equal(labels, batch['label'] + 1)


@pytest.mark.quick
def test_cifar10_batches(mock_tfds):
  source = make('cifar10', image_size=32)
  batch = next(source.train_batches(0))
  assert batch['image'].shape == (8, 32, 32, 3) and source.num_classes == 10
  assert np.all(batch['label'] < 10)


@pytest.mark.quick
def test_stream_is_deterministic_and_seeded(mock_tfds):
  a = take(make('imagenet2012').train_batches(0), 3)
  b = take(make('imagenet2012').train_batches(0), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  c = take(make('imagenet2012', seed=1).train_batches(0), 1)
  assert not np.array_equal(a[0]['image'], c[0]['image'])


@pytest.mark.quick
def test_resume_position_continues_mid_epoch_and_across_epochs(mock_tfds):
  source = make('imagenet2012')
  assert source.steps_per_epoch == 5
  straight = take(source.train_batches(0), 8)
  resumed_source = make('imagenet2012')
  seen = recording(resumed_source)
  resumed = take(resumed_source.train_batches(3), 5)
  for x, y in zip(straight[3:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  # Resuming at step 3 reads only batches 3 and 4 of epoch 0 before epoch 1 starts (in any order:
  # tf.data may read them in parallel).
  assert sorted(seen[:16]) == sorted(source.epoch_order(0)[24:40])


@pytest.mark.quick
def test_processes_read_disjoint_halves_of_each_global_batch(mock_tfds):
  sources = [make('imagenet2012', process_index=i, process_count=2) for i in range(2)]
  seen = [recording(s) for s in sources]
  batches = [next(s.train_batches(0)) for s in sources]
  assert all(b['image'].shape[0] == 4 for b in batches)
  # Every global batch of the epoch's order: process 0 reads its first half, process 1 the second
  # (tf.data may already be reading later batches of the epoch).
  rows = sources[0].epoch_order(0)[:40].reshape(5, 8)
  assert set(seen[0]) <= set(rows[:, :4].ravel()) and set(seen[1]) <= set(rows[:, 4:].ravel())
  assert set(rows[0, :4]) <= set(seen[0]) and set(rows[0, 4:]) <= set(seen[1])


@pytest.mark.quick
def test_eval_covers_every_example_once(mock_tfds):
  sources = [make('imagenet2012', eval_batch_size=12, process_index=i, process_count=2)
             for i in range(2)]
  total = 0
  for source in sources:
    for batch in source.eval_batches():
      assert batch['image'].shape == (6, 75, 75, 3)
      total += int(batch['mask'].sum())
  assert total == sources[0].eval_size == 40


# Images whose pixels say which example they are: blue is a flat code of the index (crops, flips
# and resizes keep a flat channel), red a vertical and green a horizontal ramp (they show the crop
# and the flip); the label is the index modulo 3.
CODED = 20


def coded_image(index):
  rows, columns = np.mgrid[0:24, 0:32]
  return np.stack([40 + 6 * rows, 40 + 5 * columns, np.full_like(rows, 10 + 12 * index)],
                  -1).astype(np.uint8)


def coded_reader(indices):
  encoded = [tf.io.encode_png(coded_image(int(i))).numpy() for i in indices]
  return encoded, [int(i) % 3 for i in indices], np.ones(len(indices))


def coded_source(seed=0, process_index=0, process_count=1, batch_size=4, reader=coded_reader):
  from inception_jax.data.encoded import EncodedSource
  return EncodedSource(name='coded', read_train=reader, read_eval=reader,
                       train_size=CODED, eval_size=6, num_classes=3, image_size=16,
                       global_batch_size=batch_size, eval_batch_size=4, seed=seed,
                       process_index=process_index, process_count=process_count)


def decoded_indices(batch):
  """The example each image of `batch` shows, asserting its label is that example's."""
  blue = batch['image'][..., 2].astype(int)
  assert np.all(blue == blue[:, :1, :1]), 'the flat channel must stay flat'
  indices = (blue[:, 0, 0] - 10) // 12
  np.testing.assert_array_equal(batch['label'], indices % 3)
  return indices


def horizontal_direction(images):
  """+1 where green grows left to right (as stored), -1 where the image was mirrored."""
  green = images[..., 1].astype(int)
  return np.sign(green[:, :, -1].mean(1) - green[:, :, 0].mean(1))


@pytest.mark.quick
def test_processes_read_the_epoch_order_disjointly_with_labels_matching_images():
  """Each process's images are, in order, its columns of the epoch's global batches, with the
  labels of those examples; together the processes see every example once per epoch."""
  sources = [coded_source(process_index=i, process_count=2) for i in range(2)]
  streams = [take(s.train_batches(0), 10) for s in sources]  # 5 steps an epoch: 2 epochs
  for epoch in range(2):
    order = sources[0].epoch_order(epoch).reshape(5, 4)
    seen = []
    for i, stream in enumerate(streams):
      for step, batch in enumerate(stream[5 * epoch:5 * epoch + 5]):
        assert batch['image'].shape == (2, 16, 16, 3) and batch['image'].dtype == np.uint8
        assert batch['label'].dtype == np.int32 and batch['mask'].tolist() == [1, 1]
        indices = decoded_indices(batch)
        np.testing.assert_array_equal(indices, order[step, 2 * i:2 * i + 2])
        seen.extend(indices)
    assert sorted(seen) == list(range(CODED))


@pytest.mark.quick
def test_train_augmentation_is_seeded_per_epoch_and_eval_has_none():
  def by_example(source, steps=10):
    images = {}
    for step, batch in enumerate(take(source.train_batches(0), steps)):
      for index, image in zip(decoded_indices(batch), batch['image']):
        images[(step // 5, int(index))] = image
    return images

  first, again, other = by_example(coded_source()), by_example(coded_source()), \
      by_example(coded_source(seed=1))
  assert first.keys() == again.keys() and len(first) == 2 * CODED
  assert all(np.array_equal(first[k], again[k]) for k in first)  # reproducible for a seed
  # Each example's crop or flip differs between its epochs, and between seeds.
  assert sum(np.array_equal(first[0, i], first[1, i]) for i in range(CODED)) <= 1
  assert sum(np.array_equal(first[k], other[k]) for k in first) <= 2
  directions = horizontal_direction(np.stack(list(first.values())))
  assert 5 <= (directions < 0).sum() <= 35  # about half mirrored
  # Seeded by the position in the whole stream: with one image everywhere, epoch 1 still differs
  # from epoch 0 at each position.
  same = take(coded_source(reader=lambda i: coded_reader(np.zeros_like(i))).train_batches(0), 10)
  assert not any(np.array_equal(a['image'], b['image']) for a, b in zip(same[:5], same[5:]))

  source = coded_source()
  passes = [list(source.eval_batches()) for _ in range(2)]
  for a, b in zip(*passes):
    np.testing.assert_array_equal(a['image'], b['image'])
  images = np.concatenate([b['image'] for b in passes[0]])
  mask = np.concatenate([b['mask'] for b in passes[0]])
  assert mask.tolist() == [1] * 6 + [0] * 2
  assert decoded_indices({'image': images[:6], 'label': np.concatenate(
      [b['label'] for b in passes[0]])[:6]}).tolist() == list(range(6))
  assert np.all(horizontal_direction(images[:6]) == 1)  # never mirrored
  for index, image in enumerate(images[:6]):  # the central crop, nothing random
    expected = preprocessing.eval_image(tf.io.encode_png(coded_image(index)), 16).numpy()
    np.testing.assert_array_equal(image, expected)


@pytest.mark.quick
def test_train_step_scales_uint8_pixels_to_minus_one_one():
  """Sources deliver uint8; the model sees [-1, 1] (Inception preprocessing), 0 -> -1, 255 -> 1."""
  from inception_jax import steps
  pixels = np.arange(256, dtype=np.uint8)
  scaled = np.asarray(steps.normalize(pixels))
  assert scaled.dtype == np.float32
  np.testing.assert_allclose(scaled, pixels / 127.5 - 1, atol=1e-6)
  assert scaled[0] == -1 and scaled[255] == 1


@pytest.mark.quick
def test_missing_dataset_names_the_prepare_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(
      f'python -m inception_jax.prepare imagenet2012 --data_dir={tmp_path} '
      '--manual_dir=MANUAL_DIR')):
    make('imagenet2012', data_dir=str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing downloaded or created


@pytest.mark.quick
def test_synthetic_source():
  source = make('synthetic', image_size=64)
  batch = next(source.train_batches(5))
  assert batch['image'].shape == (8, 64, 64, 3) and batch['image'].dtype == np.uint8
  again = next(make('synthetic', image_size=64).train_batches(5))
  np.testing.assert_array_equal(batch['image'], again['image'])


@pytest.mark.quick
def test_distorted_crops_respect_area_and_aspect_bounds():
  shape = tf.constant([375, 500, 3])
  whole = 0
  for i in range(200):
    window = preprocessing.distorted_crop_window(shape, tf.constant([7, i]))
    offset, size = (t.numpy() for t in window)
    assert np.all(offset >= 0) and np.all(offset + size <= [375, 500])
    area = size[0] * size[1] / (375 * 500)
    aspect = size[1] / size[0]
    if area == 1.0:
      whole += 1
      continue
    assert 0.05 - 1e-2 <= area <= 1.0
    assert 0.75 * 0.97 <= aspect <= 4 / 3 * 1.03
  assert whole < 100, 'most draws should be real distortions'


@pytest.mark.quick
def test_eval_crop_is_central():
  offset, size = (t.numpy() for t in preprocessing.central_crop_window(tf.constant([375, 500, 3])))
  np.testing.assert_array_equal(size, [328, 438])
  np.testing.assert_array_equal(offset, [(375 - 328) // 2, (500 - 438) // 2])
  # A left/right-symmetric image stays symmetric through the eval preprocessing.
  row = np.concatenate([np.arange(250), np.arange(250)[::-1]]).astype(np.uint8)
  x = np.tile(row[None, :, None], (375, 1, 3))
  out = preprocessing.eval_image(tf.io.encode_png(x), 64).numpy().astype(int)
  assert np.abs(out - out[:, ::-1]).max() <= 1


@pytest.mark.quick
def test_jpeg_and_png_give_the_same_crop():
  yy, xx = np.mgrid[0:120, 0:90]
  image = np.stack([yy * 2, xx * 2, 128 + 60 * np.sin(yy / 9.0) * np.cos(xx / 7.0)], -1)
  image = image.astype(np.uint8)  # smooth, so JPEG is nearly lossless
  seed = tf.constant([1, 2])
  png = preprocessing.train_image(tf.io.encode_png(image), seed, 32).numpy().astype(int)
  jpeg = tf.io.encode_jpeg(image, quality=100)
  jpg = preprocessing.train_image(jpeg, seed, 32).numpy().astype(int)
  assert png.shape == jpg.shape == (32, 32, 3)
  assert np.abs(png - jpg).mean() < 4  # same window, only JPEG's loss differs


def test_trains_on_mock_imagenet(mock_tfds, tmp_path):
  from inception_jax import train
  config = tiny_config(**{'dataset.name': 'imagenet2012', 'dataset.image_size': 75,
                          'model.small_inputs': False, 'num_train_steps': 2,
                          'batch_size': 8, 'eval_batch_size': 8})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['eval_examples'] == 40
  assert_near_chance_over(result, examples=40, classes=1000)


@pytest.mark.quick
def test_folder_source_skips_and_reports_a_corrupt_file(tmp_path, capsys):
  root = write_image_folder(tmp_path / 'images')
  source = make(f'folder:{root}', image_size=32, batch_size=13, eval_batch_size=4)
  assert source.classes == ['cat', 'dog'] and source.num_classes == 2
  assert source.train_size == 13 and source.eval_size == 4
  batches = source.train_batches(0)
  batch = next(batches)  # the one batch of epoch 0 holds every file, the corrupt one included
  assert batch['image'].shape == (13, 32, 32, 3)
  assert batch['mask'].sum() == 12
  broken = source.read_train.paths.index(str(root / 'train' / 'dog' / 'broken.jpg'))
  position = list(source.epoch_order(0)).index(broken)
  assert batch['mask'][position] == 0
  next(batches)  # finishes epoch 0, whose report names the file, once, with the reason
  out = capsys.readouterr().out
  assert re.search(r'^1 unreadable image\(s\) skipped in train epoch 0: \S+/broken.jpg \(.+\)$',
                   out, re.MULTILINE), out
  assert out.count('broken.jpg') == 1, out
  assert sum(b['mask'].sum() for b in source.eval_batches()) == 4


def test_folder_source_trains_one_step(tmp_path, capsys):
  from inception_jax import train
  root = write_image_folder(tmp_path / 'images')
  (root / 'val' / 'cat' / 'empty.png').write_bytes(b'')
  config = tiny_config(**{'dataset.name': f'folder:{root}', 'dataset.image_size': 16,
                          'num_train_steps': 1, 'batch_size': 12, 'eval_batch_size': 4})
  result = train.train_and_evaluate(config, str(tmp_path / 'work'))
  assert result['eval_examples'] == 4
  assert_near_chance_over(result, examples=4, classes=2)
  # One evaluation (averaged and raw parameters, in one pass over the images): one report.
  assert capsys.readouterr().out.count('empty.png') == 1


@pytest.mark.quick
def test_folder_errors_name_the_expected_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match='expected .*/train/<class>/'):
    make(f'folder:{tmp_path}')


@pytest.mark.quick
def test_eval_batch_shrinks_to_a_small_eval_split():
  source = make('digits', batch_size=16, eval_batch_size=1024)  # 297 eval images
  source.fit_eval_batch(8)
  assert source.eval_batch_size == 304  # 297 rounded up to the 8 devices
  batches = list(source.eval_batches())
  assert len(batches) == 1 and batches[0]['mask'].sum() == 297
  source.fit_eval_batch(8)
  assert source.eval_batch_size == 304
  large = make('digits', batch_size=16, eval_batch_size=64)
  large.fit_eval_batch(8)
  assert large.eval_batch_size == 64


@pytest.mark.quick
def test_write_folder_round_trips_through_the_folder_source(tmp_path):
  from inception_jax.data import folder
  rng = np.random.default_rng(0)
  images = {'train': {'b': [rng.integers(0, 256, (40, 50, 3), np.uint8) for _ in range(3)],
                      'a': [np.full((30, 30, 3), 200, np.uint8)]},
            'val': {'a': [np.full((20, 60, 3), 10, np.uint8)] * 2}}
  root = folder.write_folder(str(tmp_path / 'images'), images)
  assert sorted(os.listdir(os.path.join(root, 'train', 'b'))) == ['00000.jpg', '00001.jpg',
                                                                  '00002.jpg']
  source = make(f'folder:{root}', batch_size=4, eval_batch_size=2, image_size=16)
  assert source.classes == ['a', 'b'] and (source.train_size, source.eval_size) == (4, 2)
  [batch] = list(source.eval_batches())
  assert list(batch['label']) == [0, 0]
  # The central crop of a flat grey image stays that grey (JPEG is lossy, but not there).
  assert np.abs(batch['image'].astype(int) - 10).max() <= 2


def test_photograph_folder_cuts_two_classes_from_disjoint_parts(tmp_path):
  from inception_jax.data import samples
  photos = samples.photographs()
  assert sorted(photos) == ['china', 'flower']
  assert all(p.shape == (427, 640, 3) and p.dtype == np.uint8 for p in photos.values())
  rng = np.random.default_rng(1)
  part = photos['china'][:, :100]
  for crop in samples.random_crops(part, 20, rng, side=(0.3, 0.6)):
    side = crop.shape[0]
    assert crop.shape == (side, side, 3) and 0.3 * 100 - 1 <= side <= 0.6 * 100
    # Every crop is a window of the part (mirrored or not).
    windows = np.lib.stride_tricks.sliding_window_view(part, (side, side, 3))[..., 0, :, :, :]
    assert any((windows == c).all(axis=(-3, -2, -1)).any() for c in (crop, crop[:, ::-1]))
  root = samples.photograph_folder(str(tmp_path / 'photos'), train_per_class=3, val_per_class=2)
  source = make(f'folder:{root}', batch_size=2, eval_batch_size=2, image_size=32)
  assert source.classes == ['china', 'flower'] and (source.train_size, source.eval_size) == (6, 4)
  paths = samples.write_photographs(str(tmp_path / 'originals'))
  assert [os.path.basename(p) for p in paths] == ['china.jpg', 'flower.jpg']
  assert tf.io.decode_jpeg(tf.io.read_file(paths[0])).shape == (427, 640, 3)


@pytest.mark.quick
def test_folder_reader_converts_odd_images_and_skips_bad_files_saying_why(request, capsys):
  """Greyscale, CMYK, 16-bit, palette and RGBA images are converted to 8-bit RGB; an empty file,
  a non-image named .jpg, an image above the pixel limit and an unreadable file are skipped, each
  reported with its reason."""
  import io

  from PIL import Image

  from inception_jax.data import folder
  colour = np.zeros((30, 40, 3), np.uint8)
  colour[...] = (200, 90, 30)
  encoded = {}
  for name, image, kind in (('grey.jpg', Image.fromarray(colour[..., 0]), 'JPEG'),
                            ('cmyk.jpg', Image.fromarray(colour).convert('CMYK'), 'JPEG'),
                            ('grey16.png', Image.fromarray(colour[..., 0].astype(np.uint16) * 257),
                             'PNG'),
                            ('palette.png', Image.fromarray(colour).convert(
                                'P', palette=Image.ADAPTIVE), 'PNG'),
                            ('rgba.png', Image.fromarray(colour).convert('RGBA'), 'PNG'),
                            ('large.png', Image.fromarray(np.zeros((400, 500, 3), np.uint8)),
                             'PNG')):
    buffer = io.BytesIO()
    image.save(buffer, kind, quality=95) if kind == 'JPEG' else image.save(buffer, kind)
    encoded[name] = buffer.getvalue()
  encoded['rgb16.png'] = folder.tf.io.encode_png(colour.astype(np.uint16) * 257).numpy()
  encoded['empty.jpg'] = b''
  encoded['notes.jpg'] = b'these are notes, not a JPEG\n'
  encoded['locked.png'] = encoded['palette.png']
  # Read as nobody where the suite runs as root (root reads any file): a directory nobody can
  # reach, unlike pytest's tmp_path, and unlike any under a TMPDIR that is private to root.
  directory = tempfile.mkdtemp(prefix='inception_jax_images_',
                               dir='/tmp' if os.geteuid() == 0 else None)
  os.chmod(directory, 0o755)
  request.addfinalizer(lambda: shutil.rmtree(directory, ignore_errors=True))
  for name, data in encoded.items():
    with open(os.path.join(directory, name), 'wb') as f:
      f.write(data)
  os.chmod(os.path.join(directory, 'locked.png'), 0)
  names = sorted(encoded)
  reader = folder.FolderReader([os.path.join(directory, n) for n in names],
                               np.zeros(len(names), np.int32), 'train', max_pixels=100_000)
  as_root = os.geteuid() == 0
  if as_root:
    os.setegid(65534)
    os.seteuid(65534)
  try:
    data, _, ok = reader(np.arange(len(names)))
  finally:
    if as_root:
      os.seteuid(0)
      os.setegid(0)
  usable = dict(zip(names, ok))
  assert not any(usable[n] for n in ('empty.jpg', 'notes.jpg', 'large.png', 'locked.png'))
  for name in ('grey.jpg', 'cmyk.jpg', 'grey16.png', 'rgb16.png', 'palette.png', 'rgba.png'):
    assert usable[name], name
    pixels = folder.tf.io.decode_image(data[names.index(name)], channels=3,
                                       expand_animations=False).numpy()
    expected = (200, 200, 200) if name.startswith('grey') else (200, 90, 30)
    np.testing.assert_allclose(pixels[15, 20], expected, atol=3, err_msg=name)
  reader.report('epoch 0')
  out = capsys.readouterr().out
  assert out.startswith('4 unreadable image(s) skipped in train epoch 0: '), out
  assert 'empty.jpg (empty file (0 bytes))' in out
  assert 'large.png (500x400 = 200,000 pixels, above the limit of 100,000 ' \
         '(config.dataset.max_image_pixels))' in out
  assert re.search(r'locked.png \(.*Permission denied', out), out
  assert re.search(r'notes.jpg \((Unknown image file format|.*not .*image)', out), out
  assert '{{' not in out  # TensorFlow's op prefix is dropped
