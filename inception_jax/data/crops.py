"""Multi-crop evaluation (host side, tf.data): every image -> a stack of uint8 crops whose
predictions the evaluator averages.

Inception-v4 (Szegedy et al. 2017, Table 2-5) reports 10/12-crop and 144-crop results "as
described in [GoogLeNet]". The protocols, for a model input of `size` pixels (the sources' scales
are for 224; ours are those scales times size/224, rounded to int):

- 144 (GoogLeNet, Szegedy et al. 2015, "Going deeper with convolutions", Sec. 7): the image is
  resized so that its shorter side is s, for the 4 scales s in (256, 288, 320, 352) x size/224
  (for 299: 342, 384, 427, 470); from each, the left, centre and right s x s squares (top, centre
  and bottom for a portrait image; a square image gives the same square three times); from each
  square the 4 corner crops and the centre crop of size x size, and the whole square resized to
  size x size; and the mirror image (horizontal flip) of each: 4 x 3 x 6 x 2 = 144 crops.
- 12: the paper's "12 crops as described in [GoogLeNet]", which neither paper defines. Our
  interpretation: one scale (the first, 256 x size/224), the central square only, its 4 corners,
  centre and whole square, and their mirrors: 1 x 1 x 6 x 2 = 12 (one line of `_PROTOCOLS`).
- 10 (AlexNet, Krizhevsky et al. 2012, Sec. 4.1: "the four corner patches and the center patch as
  well as their horizontal reflections"): one scale (256 x size/224), the central square, its 4
  corners and centre (no whole square), and their mirrors: 1 x 1 x 5 x 2 = 10.

Resizing is bilinear, antialiased where it shrinks (`tf.image.resize(antialias=True)`); each scale
is resized once per image and its corner and centre crops are exact pixel slices of it (rounded
to uint8 like `preprocessing.resize`), and the whole square is resized from it (before rounding).
Small images (CIFAR-10, digits) are simply upsampled by the scale resize. Mirrors are exact
horizontal flips of their unmirrored crops, which come first: crop i + count // 2 is the mirror of
crop i. The order is scale, square (start, centre, end of the longer side), position (topleft,
topright, bottomleft, bottomright, centre, whole). The single-crop eval of the jobs (the central
87.5%, `preprocessing.eval_image`) is not here, but `crop_fn`, the evaluator's per-image work,
gives it beside the others (`inception_jax.evaluate`: each image read once for all protocols).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from inception_jax import tf_import, workdir as wd
from inception_jax.data import preprocessing
from inception_jax.data.encoded import EncodedSource

tf = tf_import.tensorflow()


REFERENCE_SIZE = 224  # the input size the sources' scales are given for
# protocol: (shorter side(s) at REFERENCE_SIZE, squares along the longer side, whole square too)
_PROTOCOLS = {
    10: ((256,), ('centre',), False),
    12: ((256,), ('centre',), True),
    144: ((256, 288, 320, 352), ('start', 'centre', 'end'), True),
}
PROTOCOLS = tuple(_PROTOCOLS)
POSITIONS = (  # the size x size crops of a square; 'whole' is the square resized
    'topleft', 'topright', 'bottomleft', 'bottomright', 'centre')
# The square names along the longer side, as they read on a landscape and a portrait image.
_ORIENTED = {'landscape': {'start': 'left', 'centre': 'centre', 'end': 'right'},
             'portrait': {'start': 'top', 'centre': 'centre', 'end': 'bottom'}}


def _protocol(protocol: int) -> tuple[tuple[int, ...], tuple[str, ...], bool]:
  if protocol not in _PROTOCOLS:
    raise ValueError(f'unknown multi-crop protocol {protocol!r}; the protocols are '
                     f'{", ".join(map(str, PROTOCOLS))}')
  return _PROTOCOLS[protocol]


def _positions(whole: bool) -> tuple[str, ...]:
  return POSITIONS + ('whole',) if whole else POSITIONS


def count(protocol: int) -> int:
  """Crops per image: 10, 12 or 144."""
  scales, squares, whole = _protocol(protocol)
  return 2 * len(scales) * len(squares) * len(_positions(whole))


def scales(protocol: int, size: int) -> tuple[int, ...]:
  """The shorter sides the image is resized to: the sources' scales times size/224, rounded."""
  return tuple((2 * s * size + REFERENCE_SIZE) // (2 * REFERENCE_SIZE)
               for s in _protocol(protocol)[0])


def _layout(protocol: int, size: int):
  """(scale, square, position) of each unmirrored crop, in order."""
  _, squares, whole = _protocol(protocol)
  return [(s, square, position) for s in scales(protocol, size) for square in squares
          for position in _positions(whole)]


def names(protocol: int, size: int | None = None) -> list[str]:
  """One file-name-safe name per crop, in the order of `crops`: 's342-centre-topleft',
  's342-end-whole-mirror', ... The square is named by its place along the longer side (start: left
  or top; end: right or bottom). The scale is in pixels for `size`, or without `size` the
  sources' 224-pixel scale ('s256')."""
  reference = _protocol(protocol)[0]
  layout = _layout(protocol, size or REFERENCE_SIZE)
  plain = []
  for i, (s, square, position) in enumerate(layout):
    scale = s if size else reference[i // (len(layout) // len(reference))]
    plain.append(f's{scale}-{square}-{position}')
  return plain + [f'{name}-mirror' for name in plain]


def _scaled_shape(height, width, s, minimum):
  """(height, width) with the shorter side s, the longer rounded half up; ints or tensors."""
  short = minimum(height, width)
  return (2 * height * s + short) // (2 * short), (2 * width * s + short) // (2 * short)


def _square_offset(scaled_height, scaled_width, s, square):
  """(y, x) of an s x s square at the start, centre or end of the longer side (the shorter side
  is s, so its offset is 0 whatever the square)."""
  along = {'start': lambda n: 0 * n, 'centre': lambda n: (n - s) // 2, 'end': lambda n: n - s}
  return along[square](scaled_height), along[square](scaled_width)


def _crop_offset(s: int, size: int, position: str) -> tuple[int, int]:
  """(y, x) of a size x size crop in an s x s square."""
  far, mid = s - size, (s - size) // 2
  return {'topleft': (0, 0), 'topright': (0, far), 'bottomleft': (far, 0),
          'bottomright': (far, far), 'centre': (mid, mid)}[position]


def _check_size(protocol: int, size: int) -> None:
  _protocol(protocol)
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'the crop size must be a positive int, not {size!r}')


def boxes(height: int, width: int, protocol: int, size: int) -> list[dict]:
  """The geometry of `crops` for a height x width image, crop by crop in the same order: 'name',
  'scale' (the shorter side s), 'scaled' (the resized image's (height, width)), 'square' (its name
  on this image: left/centre/right, or top/centre/bottom for a portrait image), 'square_box' and
  'box' ((top, left, height, width) in resized-image pixels; 'box' is the square itself for the
  whole-square crop, which is then resized to size x size), 'position' and 'mirror'."""
  _check_size(protocol, size)
  orientation = 'portrait' if height > width else 'landscape'
  result = []
  for (s, square, position), name in zip(_layout(protocol, size), names(protocol, size)):
    scaled = _scaled_shape(height, width, s, min)
    y, x = _square_offset(*scaled, s, square)
    dy, dx = (0, 0) if position == 'whole' else _crop_offset(s, size, position)
    side = s if position == 'whole' else size
    result.append({'name': name, 'scale': s, 'scaled': scaled,
                   'square': _ORIENTED[orientation][square], 'square_box': (y, x, s, s),
                   'box': (y + dy, x + dx, side, side), 'position': position, 'mirror': False})
  return result + [dict(crop, name=f'{crop["name"]}-mirror', mirror=True) for crop in result]


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def crops(image: tf.Tensor, protocol: int, size: int) -> tf.Tensor:
  """A uint8 [H, W, 3] image of any size -> uint8 [count(protocol), size, size, 3] crops, in the
  order of `names` and `boxes`. Graph-mode friendly: H and W may be unknown until run time."""
  _check_size(protocol, size)
  image = tf.ensure_shape(tf.convert_to_tensor(image), [None, None, 3])
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  _, squares, whole = _protocol(protocol)
  out = []
  for s in scales(protocol, size):
    scaled_shape = _scaled_shape(height, width, s, tf.minimum)
    scaled = tf.image.resize(image, tf.stack(scaled_shape), method='bilinear', antialias=True)
    pixels = _to_uint8(scaled)
    for square in squares:
      y, x = _square_offset(*scaled_shape, s, square)
      for position in POSITIONS:
        dy, dx = _crop_offset(s, size, position)
        out.append(tf.slice(pixels, tf.stack([y + dy, x + dx, 0]), [size, size, 3]))
      if whole:
        box = tf.slice(scaled, tf.stack([y, x, 0]), [s, s, 3])
        out.append(_to_uint8(tf.image.resize(box, (size, size), method='bilinear',
                                             antialias=True)))
  # One stack of all the crops: faster than stacking, flipping and concatenating the stack.
  return tf.ensure_shape(tf.stack(out + [tf.reverse(crop, axis=[1]) for crop in out]),
                         [count(protocol), size, size, 3])


def crop_key(protocol: int, size: int) -> str:
  return f'{protocol}@{size}'


def example_dataset(source):
  """This process's eval examples, padded like the job's eval: (image, label, valid) with the image
  encoded (TFDS, folders) or decoded (in-memory sources); and whether it is encoded."""
  if isinstance(source, EncodedSource):
    return source.eval_examples(), True
  batches = list(source.eval_batches())  # small in-memory splits (digits, synthetic)
  return tf.data.Dataset.from_tensor_slices(tuple(
      np.concatenate([b[k] for b in batches]) for k in ('image', 'label', 'mask'))), False


def crop_fn(protocols: Sequence[int], sizes: Sequence[int], encoded: bool):
  """(image, label, valid) -> ({crop_key: uint8 [crops, size, size, 3]}, label, valid)."""

  def make(image, label, valid):
    full = None
    if encoded and any(p != 1 for p in protocols):
      full = tf.io.decode_image(image, channels=3, expand_animations=False)
    elif not encoded:
      full = image
    out = {}
    for size in sizes:
      for protocol in protocols:
        if protocol == 1:
          # The job's own eval crop: the same function on the same bytes, so the same pixels.
          one = (preprocessing.eval_image(image, size) if encoded
                 else preprocessing.resize(image, size) if image.shape[0] != size else image)
          out[crop_key(1, size)] = one[None]
        else:
          out[crop_key(protocol, size)] = crops(full, protocol, size)
    return out, label, valid

  return make


def crop_batches(source, protocols, sizes, batch_size: int) -> Iterator[tuple[dict, Any, Any]]:
  examples, encoded = example_dataset(source)
  ds = examples.map(crop_fn(protocols, sizes, encoded), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
  ds = ds.batch(batch_size // source.process_count).prefetch(2)
  yield from ds.as_numpy_iterator()


def dump_crops(directory: str, source, protocols, size: int) -> None:
  """PNG files of the first eval image's crops, named after the protocol and each crop."""
  examples, encoded = example_dataset(source)
  image, _, _ = next(iter(examples))
  full = tf.io.decode_image(image, channels=3, expand_animations=False) if encoded else image
  wd.makedirs(directory)
  for protocol in protocols:
    images = crop_fn([protocol], [size], encoded)(image, 0, 1.0)[0][crop_key(protocol, size)]
    labels = ['central'] if protocol == 1 else names(protocol, size)
    for name, crop in zip(labels, images.numpy()):
      wd.write_atomically(wd.join(directory, f'{protocol}crops-{name}.png'),
                          tf.io.encode_png(crop).numpy())
  wd.write_atomically(wd.join(directory, 'original.png'), tf.io.encode_png(full).numpy())
