"""The multi-crop evaluation protocols (inception_jax/data/crops.py): their counts and names, their
geometry, and the crops themselves against an independent resize."""

import re

import numpy as np
import pytest
import tensorflow as tf

from inception_jax.data import crops

pytestmark = pytest.mark.quick  # the first tier: README, "Testing"

SIZE = 64  # a small model input keeps the 144-crop stacks cheap; scales (73, 82, 91, 101)


def image(height, width, seed=0):
  """A uint8 image with structure: gradients in y and x, plus noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  pixels = np.stack([255 * y / height, 255 * x / width, rng.uniform(0, 255, (height, width))], -1)
  return pixels.astype(np.uint8)


def scaled(pixels, shape):
  """The image resized independently, as float and as uint8."""
  resized = tf.image.resize(pixels, shape, method='bilinear', antialias=True).numpy()
  return resized, np.clip(np.round(resized), 0, 255).astype(np.uint8)


def test_counts_and_names():
  for protocol, expected in zip(crops.PROTOCOLS, (10, 12, 144)):
    assert crops.count(protocol) == expected
    for size in (None, 299):
      names = crops.names(protocol, size)
      assert len(names) == expected == len(set(names))
      assert all(re.fullmatch(r's\d+-(start|centre|end)-[a-z]+(-mirror)?', n) for n in names)
      half = expected // 2
      assert names[half:] == [f'{n}-mirror' for n in names[:half]]
  assert crops.names(10)[0] == 's256-centre-topleft'
  assert crops.names(144, 299)[-1] == 's470-end-whole-mirror'
  assert not any('whole' in n for n in crops.names(10))
  assert sum('whole' in n for n in crops.names(12)) == 2


def test_unknown_protocol():
  for call in (lambda: crops.count(7), lambda: crops.names(7), lambda: crops.boxes(9, 9, 7, 3),
               lambda: crops.crops(tf.zeros([9, 9, 3], tf.uint8), 7, 3)):
    with pytest.raises(ValueError, match='10, 12, 144'):
      call()


def test_scales():
  assert crops.scales(144, 299) == (342, 384, 427, 470)
  assert crops.scales(144, 224) == (256, 288, 320, 352)
  assert crops.scales(10, 299) == crops.scales(12, 299) == (342,)


@pytest.mark.parametrize('height,width,size',
                         [(375, 500, 299), (500, 375, 299), (300, 300, 299), (16, 16, 75),
                          (31, 97, 64)])
def test_boxes_geometry(height, width, size):
  boxes = crops.boxes(height, width, 144, size)
  assert len(boxes) == 144
  assert [b['name'] for b in boxes] == crops.names(144, size)
  assert sorted({b['scale'] for b in boxes}) == list(crops.scales(144, size))
  for b in boxes:
    scaled_h, scaled_w = b['scaled']
    assert min(b['scaled']) == b['scale']
    assert abs(scaled_h / scaled_w - height / width) < 1 / b['scale']  # the aspect ratio kept
    y, x, h, w = b['square_box']
    assert h == w == b['scale'] and 0 <= y and y + h <= scaled_h and 0 <= x and x + w <= scaled_w
    by, bx, bh, bw = b['box']
    assert y <= by and by + bh <= y + h and x <= bx and bx + bw <= x + w
    if b['position'] == 'whole':
      assert b['box'] == b['square_box']
    else:
      assert bh == bw == size
  half = len(boxes) // 2
  for plain, mirror in zip(boxes[:half], boxes[half:]):
    assert not plain['mirror'] and mirror['mirror']
    assert {**plain, 'name': mirror['name'], 'mirror': True} == mirror


def test_squares_follow_the_longer_side():
  def squares(height, width):
    boxes = [b for b in crops.boxes(height, width, 144, 299) if b['scale'] == 342]
    return {b['square']: b['square_box'] for b in boxes}

  landscape = squares(375, 500)  # scaled to 342 x 456
  assert landscape == {'left': (0, 0, 342, 342), 'centre': (0, 57, 342, 342),
                       'right': (0, 114, 342, 342)}
  portrait = squares(500, 375)
  assert portrait == {'top': (0, 0, 342, 342), 'centre': (57, 0, 342, 342),
                      'bottom': (114, 0, 342, 342)}
  assert set(squares(300, 300).values()) == {(0, 0, 342, 342)}  # the same square three times
  corners = {b['position']: b['box'] for b in crops.boxes(375, 500, 10, 299)}
  assert corners == {'topleft': (0, 57, 299, 299), 'topright': (0, 100, 299, 299),
                     'bottomleft': (43, 57, 299, 299), 'bottomright': (43, 100, 299, 299),
                     'centre': (21, 78, 299, 299)}


@pytest.mark.parametrize('height,width', [(90, 120), (120, 90)])
def test_crops_match_an_independent_resize(height, width):
  pixels = image(height, width)
  got = crops.crops(tf.constant(pixels), 144, SIZE).numpy()
  assert got.shape == (144, SIZE, SIZE, 3) and got.dtype == np.uint8
  resized = {}
  for crop, b in zip(got, crops.boxes(height, width, 144, SIZE)):
    if b['scale'] not in resized:
      resized[b['scale']] = scaled(pixels, b['scaled'])
    as_float, as_uint8 = resized[b['scale']]
    y, x, h, w = b['box']
    if b['position'] == 'whole':
      expected = scaled(as_float[y:y + h, x:x + w], (SIZE, SIZE))[1]
    else:
      expected = as_uint8[y:y + h, x:x + w]
    if b['mirror']:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(crop, expected, err_msg=b['name'])
  half = len(got) // 2
  np.testing.assert_array_equal(got[:half, :, ::-1], got[half:])  # mirrors: exact flips
  assert len({c.tobytes() for c in got}) > 120  # near-duplicates only where the protocol has them


def test_unscaled_crops_are_slices_of_the_image():
  # A shorter side already at the scale (256 for size 224): the corners are the image's pixels.
  pixels = image(256, 320, seed=1)
  got = crops.crops(tf.constant(pixels), 10, 224).numpy()
  square = pixels[:, 32:288]
  expected = [square[:224, :224], square[:224, 32:], square[32:, :224], square[32:, 32:],
              square[16:240, 16:240]]
  np.testing.assert_array_equal(got[:5], np.stack(expected))
  np.testing.assert_array_equal(got[5:], np.stack(expected)[:, :, ::-1])


def test_protocols_share_their_crops():
  pixels = tf.constant(image(100, 70, seed=2))
  ten, twelve, all_ = (crops.crops(pixels, p, SIZE).numpy() for p in (10, 12, 144))
  names = crops.names(144, SIZE)
  for protocol, got in ((10, ten), (12, twelve)):
    for crop, name in zip(got, crops.names(protocol, SIZE)):
      np.testing.assert_array_equal(crop, all_[names.index(name)], err_msg=name)
  np.testing.assert_array_equal(ten[4], all_[names.index('s73-centre-centre')])


def test_graph_mode_with_unknown_shapes():
  shapes = [(40, 50), (50, 40), (16, 16)]
  dataset = tf.data.Dataset.from_generator(
      lambda: (image(h, w, seed=i) for i, (h, w) in enumerate(shapes)),
      output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  dataset = dataset.map(lambda x: crops.crops(x, 12, SIZE))
  assert dataset.element_spec.shape == (12, SIZE, SIZE, 3)
  outputs = list(dataset.as_numpy_iterator())
  for (h, w), got in zip(shapes, outputs):
    np.testing.assert_array_equal(got, crops.crops(image(h, w, shapes.index((h, w))), 12, SIZE))


def test_small_images_are_upsampled():
  got = crops.crops(tf.constant(image(16, 16)), 144, 75).numpy()
  assert got.shape == (144, 75, 75, 3) and got.dtype == np.uint8
  assert got[..., 0].min() < 40 and got[..., 0].max() > 200  # the gradient spans every crop set
